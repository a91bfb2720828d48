import ArgumentParser
import BackfillCore
import Foundation

struct Rehearse: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Staging load rehearsal: synthetic live traffic, first alone, then during the job; report what it felt.",
        discussion: """
            Default traffic takes the row locks a writer would without changing data (SELECT … FOR NO KEY UPDATE of \
            random existing keys, rolled back). The job runs from its first key every time, under a checkpoint of \
            its own (<name>.rehearsal), so a job that is already done is measured again and its own checkpoint \
            never moves. With --max-live-p99-ms / --max-lock-wait-ms it is a gate: exit 1 when exceeded, or when \
            the job's window held fewer than \(Rehearsal.minimumLiveTransactions) live transactions. --dry-run rolls \
            every batch back: locks are real, writes are not kept. --report writes the report as one HTML page.
            """)

    @Argument(help: "The job file.") var file: String
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Live traffic clients.") var clients = 4
    @Option(help: "Baseline window of traffic alone, with its unit (default: 15s).", transform: DurationArgument.init(parsing:)) var baseline = DurationArgument(argument: "15s")!
    @Option(help: "The operator's own traffic: a file of SQL statements separated by `;`, `:key` standing for a random existing key.") var trafficSQL: String?
    @Option(help: "Production row count, for the run-time estimate (default: this table's).") var rowsEstimate: Int64?
    @Option(help: "Gate: exit 1 when the live p99 during the job exceeds this.") var maxLiveP99Ms: Double?
    @Option(help: "Gate: exit 1 when a live transaction waited longer than this for a row lock during the job (with --traffic-sql: when one took longer).") var maxLockWaitMs: Double?
    @Flag(help: "Roll back every batch (the staging database must not change).") var dryRun = false
    @Option(help: "Report format: text or json.") var format: ReportFormat = .text
    @Option(help: ArgumentHelp("Also write the report as one self-contained HTML page: charts as inline SVG, no scripts, printable.", valueName: "FILE.html"))
    var report: String?
    @Option(name: .customLong("log-format"), help: "Log format of the run's events on stderr: text or json. Default: text. Env: \(Setting.logFormat).") var givenLogFormat: LogFormat?

    var logFormat: LogFormat { givenLogFormat ?? .text }

    enum ReportFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    mutating func validate() throws {
        try Setting.logFormat.fill(&givenLogFormat)
        guard (1...256).contains(clients) else { throw ValidationError("--clients must be from 1 to 256") }
        if let report {
            let folder = (report as NSString).deletingLastPathComponent
            guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder) else {
                throw ValidationError("--report \(report): the folder \(folder) does not exist")
            }
        }
    }

    func run() throws {
        let spec = try loadSpec(file)
        var options = RehearsalOptions(database: db.conninfo)
        options.store = db.store
        options.clients = clients
        options.baselineSeconds = baseline.seconds
        if let trafficSQL {
            guard let text = try? String(contentsOfFile: trafficSQL, encoding: .utf8) else {
                throw CommandFailure.invalid("--traffic-sql \(trafficSQL): cannot read the file", next: "name a readable file of SQL statements; nothing was changed")
            }
            options.trafficSQL = text
        }
        options.rowsEstimate = rowsEstimate
        options.maxLiveP99Ms = maxLiveP99Ms
        options.maxLockWaitMs = maxLockWaitMs
        options.dryRun = dryRun
        let stop = StopSignal()
        let console = Console(logFormat: logFormat, progress: .never)
        let signals = SignalHandling.install(stop: stop, console: console)
        defer { withExtendedLifetime(signals) {} }
        let (result, outcome): (RehearsalReport, RunOutcome)
        do {
            (result, outcome) = try Rehearsal.run(spec: spec, options: options, stop: stop, emit: console.handle)
        } catch let error as JobFileError {
            throw CommandFailure.invalid("invalid: \(error)")
        }
        switch format {
        case .text: print(result.text)
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        }
        if let report {
            do {
                try result.html().write(toFile: report, atomically: true, encoding: .utf8)
                console.note("backfill: report written to \(report)")
            } catch {
                throw CommandFailure(message: "--report \(report): cannot write the file: \(error)", next: "choose a folder you can write to", exitCode: 1)
            }
        }
        if outcome.exitCode != 0 {
            console.finish(outcome, job: spec.name)
            throw ExitCode(outcome.exitCode)
        }
        if !result.passed {
            let failed = result.gates.filter { !$0.passed }.map(\.name).joined(separator: ", ")
            throw CommandFailure(
                message: "rehearsal gate failed: \(failed) (see the report)",
                next: "make the job gentler (batch.target_ms, throttle.max_rows_per_second, timeouts.lock_ms) and rehearse again",
                exitCode: 1)
        }
    }
}
