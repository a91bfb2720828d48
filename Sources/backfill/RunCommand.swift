import ArgumentParser
import BackfillCore
import Dispatch
import Foundation

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one or more job files, one after another.",
        discussion: "Exit codes: 0 done, 1 failed, 2 invalid job file/flag/database object, 3 stopped before done, 4 another runner holds the job.")

    @Argument(help: "Job files (YAML).")
    var files: [String]

    @OptionGroup var db: DatabaseOptions

    @Option(name: .long, help: "Stop after the batch in flight once this much time has passed (90s, 10m, 2h); exit 3, resumable.")
    var maxRuntime: DurationArgument?

    @Option(name: .long, help: "Log format on stderr: text or json (one object per event).")
    var logFormat: LogFormat = .text

    @Flag(name: .long, help: "Discard the job's checkpoint (also one made by a changed job file) and start from the first key.")
    var restart = false

    @Flag(name: .long, help: "Skip the lease and add this process's worker to a job another runner holds.")
    var join = false

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("name at least one job file") }
    }

    func run() throws {
        var specs: [JobSpec] = []
        for file in files {
            do {
                specs.append(try JobSpec.load(path: file))
            } catch {
                printError("backfill: invalid job file: \(error)")
                throw ExitCode(2)
            }
        }
        let stop = StopSignal()
        let signals = SignalHandling.install(stop: stop)
        defer { withExtendedLifetime(signals) {} }
        let started = Date()
        for spec in specs {
            var options = RunOptions(database: db.conninfo)
            options.store = db.store
            options.maxRuntime = maxRuntime.map { max(0, $0.seconds - Date().timeIntervalSince(started)) }
            options.restart = restart
            options.join = join
            let reporter = Reporter(format: logFormat)
            let outcome = Runner(spec: spec, options: options, stop: stop, emit: reporter.handle).run()
            reporter.finish(outcome)
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        }
    }
}

/// Prints run events: every event as a JSON line, or text lines with a progress line at most
/// once a second.
final class Reporter {
    let format: LogFormat
    private var lastProgress = Date.distantPast
    private let started = Date()

    init(format: LogFormat) { self.format = format }

    func handle(_ event: RunEvent) {
        if format == .json {
            printError(event.jsonLine)
            return
        }
        if let line = ConsoleFormat.line(event) {
            printError(line)
        } else if event.kind == .batch, Date().timeIntervalSince(lastProgress) >= 1 {
            lastProgress = Date()
            if case .int(let rows) = event["rows_done"], case .int(let size) = event["batch_size"],
               case .double(let ms) = event["duration_ms"], case .strings(let key) = event["last_key"] {
                printError(ConsoleFormat.progress(job: event.job, rows: rows, seconds: Date().timeIntervalSince(started), batchSize: size, lastBatchMs: ms, lastKey: key))
            }
        }
    }

    func finish(_ outcome: RunOutcome) {
        switch outcome {
        case .done(let s), .stopped(_, let s), .failed(_, let s):
            if format == .text { printError("summary: " + s.line) }
        case .held(let holder):
            printError("backfill: another runner holds this job: \(holder); it exits when done, or wait for it (exit 4)")
        case .invalid(let error):
            printError("backfill: invalid: \(error)")
        }
    }
}

/// SIGINT and SIGTERM: stop after the batch in flight; if it is still running 2 s later, cancel it.
enum SignalHandling {
    static func install(stop: StopSignal) -> [DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                printError("backfill: received signal \(number); stopping after the batch in flight")
                stop.request()
                DispatchQueue.global().asyncAfter(deadline: .now() + 2) { stop.cancelInFlight() }
            }
            source.resume()
            return source
        }
    }
}
