import ArgumentParser
import BackfillCore
import Foundation

struct Rehearse: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Staging load rehearsal: synthetic live traffic, first alone, then during the job; report what it felt.",
        discussion: """
            Default traffic takes the row locks a writer would without changing data (SELECT … FOR NO KEY UPDATE of \
            random existing keys, rolled back). With --max-live-p99-ms / --max-lock-wait-ms it is a gate: exit 1 \
            when exceeded. --dry-run rolls every batch back: locks are real, writes are not kept.
            """)

    @Argument(help: "The job file.") var file: String
    @OptionGroup var db: DatabaseOptions
    @Option(help: "Live traffic clients.") var clients = 4
    @Option(help: "Baseline window of traffic alone, with its unit (default: 15s).", transform: DurationArgument.init(parsing:)) var baseline = DurationArgument(argument: "15s")!
    @Option(help: "The operator's own traffic: a file of SQL statements separated by `;`, `:key` standing for a random existing key.") var trafficSQL: String?
    @Option(help: "Production row count, for the run-time estimate (default: this table's).") var rowsEstimate: Int64?
    @Option(help: "Gate: exit 1 when the live p99 during the job exceeds this.") var maxLiveP99Ms: Double?
    @Option(help: "Gate: exit 1 when any live transaction waited longer than this.") var maxLockWaitMs: Double?
    @Flag(help: "Roll back every batch (the staging database must not change).") var dryRun = false
    @Option(help: "Report format: text or json.") var format: ReportFormat = .text
    @Option(name: .customLong("log-format"), help: "Log format of the run's events on stderr: text or json. Default: text. Env: \(Setting.logFormat).") var givenLogFormat: LogFormat?

    var logFormat: LogFormat { givenLogFormat ?? .text }

    enum ReportFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    mutating func validate() throws {
        try Setting.logFormat.fill(&givenLogFormat)
        guard (1...256).contains(clients) else { throw ValidationError("--clients must be from 1 to 256") }
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
        let (report, outcome): (RehearsalReport, RunOutcome)
        do {
            (report, outcome) = try Rehearsal.run(spec: spec, options: options, stop: stop, emit: console.handle)
        } catch let error as JobFileError {
            throw CommandFailure.invalid("invalid: \(error)")
        }
        switch format {
        case .text: print(report.text)
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
        if outcome.exitCode != 0 {
            console.finish(outcome, job: spec.name)
            throw ExitCode(outcome.exitCode)
        }
        if !report.passed {
            let failed = report.gates.filter { !$0.passed }.map(\.name).joined(separator: ", ")
            throw CommandFailure(
                message: "rehearsal gate failed: \(failed) (see the report)",
                next: "make the job gentler (batch.target_ms, throttle.max_rows_per_second, timeouts.lock_ms) and rehearse again",
                exitCode: 1)
        }
    }
}
