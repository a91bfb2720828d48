import ArgumentParser
import BackfillCore
import Dispatch
import Foundation

/// Flags of the operator's view shared by `run` and `demo`.
struct OutputOptions: ParsableArguments {
    @Option(name: .long, help: "Log format on stderr: text (for people) or json (one object per event).")
    var logFormat: LogFormat = .text

    @Option(name: .long, help: "Progress line: auto (redrawn on a terminal, every 10 s otherwise, off with json logs), always, never.")
    var progress: ProgressMode = .auto

    @Option(name: .long, help: "Write Prometheus metrics to this file (atomically, every 5 s and at exit), for node_exporter's textfile collector.")
    var metricsFile: String?

    @Option(name: .long, help: "Serve Prometheus metrics at http://0.0.0.0:PORT/metrics while the job runs.")
    var metricsPort: Int?

    func validate() throws {
        if let metricsPort, !(1...65535).contains(metricsPort) { throw ValidationError("--metrics-port must be from 1 to 65535") }
    }

    /// Runs `body` with a console and, when asked for, metrics; the exporter writes its last file at the end.
    func withConsole<T>(_ body: (Console, @escaping (RunEvent) -> Void) throws -> T) throws -> T {
        let exporter: MetricsExporter?
        do {
            exporter = try MetricsSetup.start(file: metricsFile, port: metricsPort)
        } catch {
            printError("backfill: \(error)")
            throw ExitCode(2)
        }
        defer { exporter?.stop() }
        let console = Console(logFormat: logFormat, progress: progress)
        var metrics: [String: RunMetrics] = [:]
        return try body(console) { event in
            console.handle(event)
            if exporter != nil {
                let recorder = metrics[event.job] ?? RunMetrics(job: event.job)
                metrics[event.job] = recorder
                recorder.record(event)
            }
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one or more job files, one after another.",
        discussion: "Exit codes: 0 done, 1 failed, 2 invalid job file/flag/database object, 3 stopped before done, 4 another runner holds the job.")

    @Argument(help: "Job files (YAML).")
    var files: [String]

    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .long, help: "Stop after the batch in flight once this much time has passed (90s, 10m, 2h); exit 3, resumable.", transform: DurationArgument.init(parsing:))
    var maxRuntime: DurationArgument?

    @Flag(name: .long, help: "Discard the job's checkpoint (also one made by a changed job file) and start from the first key.")
    var restart = false

    @Flag(name: .long, help: "Skip the lease and add this process's workers to a job another runner holds (from any machine).")
    var join = false

    @Option(name: .long, help: "Workers in this process, each on its own connection and thread (default: the job file's `workers`).")
    var workers: Int?

    func validate() throws {
        if let workers, !(1...1024).contains(workers) { throw ValidationError("--workers must be from 1 to 1024") }
    }

    func run() throws {
        let specs = try files.map(loadSpec)
        let stop = StopSignal()
        let signals = SignalHandling.install(stop: stop)
        defer { withExtendedLifetime(signals) {} }
        let started = Date()
        try output.withConsole { console, emit in
            for spec in specs {
                var options = RunOptions(database: db.conninfo)
                options.store = db.store
                options.maxRuntime = maxRuntime.map { max(0, $0.seconds - Date().timeIntervalSince(started)) }
                options.restart = restart
                options.join = join
                options.workers = workers
                let outcome = Runner(spec: spec, options: options, stop: stop, emit: emit).run()
                console.finish(outcome, job: spec.name)
                if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
            }
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
