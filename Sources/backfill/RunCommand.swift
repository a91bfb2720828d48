import ArgumentParser
import BackfillCore
import Dispatch
import Foundation
import Synchronization

/// Flags of the operator's view shared by `run` and `demo`.
struct OutputOptions: ParsableArguments {
    @Option(name: .customLong("log-format"), help: "Log format on stderr: text (for people) or json (one object per line). Default: text. Env: \(Setting.logFormat).")
    var givenLogFormat: LogFormat?

    @Option(name: .customLong("progress"), help: "Progress line: auto (redrawn on a terminal, every 10 s otherwise, off with json logs), always, never. Default: auto. Env: \(Setting.progress).")
    var givenProgress: ProgressMode?

    @Option(name: .long, help: "Write Prometheus metrics to this file (atomically, every 5 s and at exit), for node_exporter's textfile collector. Env: \(Setting.metricsFile).")
    var metricsFile: String?

    @Option(name: .long, help: "Serve Prometheus metrics at http://ADDR:PORT/metrics while the job runs (ADDR: --metrics-bind). Env: \(Setting.metricsPort).")
    var metricsPort: Int?

    @Option(name: .long, help: "The IPv4 or IPv6 address the metrics server listens on (127.0.0.1 for this host only, :: for IPv6). Default: 0.0.0.0. Env: \(Setting.metricsBind).")
    var metricsBind: String?

    mutating func validate() throws {
        try Setting.logFormat.fill(&givenLogFormat)
        try Setting.progress.fill(&givenProgress)
        let fileSource = try Setting.metricsFile.fill(&metricsFile) { $0 }
        if let metricsFile {
            let directory = URL(fileURLWithPath: metricsFile).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: directory) else {
                throw ValidationError("\(fileSource)=\(metricsFile): the directory \(directory) does not exist or is not writable")
            }
        }
        let portSource = try Setting.metricsPort.fill(&metricsPort)
        if let metricsPort, !(1...65535).contains(metricsPort) { throw ValidationError("\(portSource) must be from 1 to 65535") }
        try Setting.metricsBind.fill(&metricsBind) { $0 }
    }

    var logFormat: LogFormat { givenLogFormat ?? .text }
    var progress: ProgressMode { givenProgress ?? .auto }

    /// Runs `body` with a console, SIGINT/SIGTERM handling that sets `stop`, and, when asked for,
    /// metrics; the exporter writes its last file at the end.
    func withConsole<T>(stop: StopSignal, _ body: (Console, @escaping @Sendable (RunEvent) -> Void) throws -> T) throws -> T {
        let exporter: MetricsExporter?
        do {
            exporter = try MetricsSetup.start(file: metricsFile, port: metricsPort, bind: metricsBind)
        } catch {
            throw CommandFailure.invalid("metrics: \(error)", next: "choose another --metrics-port, --metrics-bind or --metrics-file; nothing was changed")
        }
        defer { exporter?.stop() }
        let console = Console(logFormat: logFormat, progress: progress)
        let signals = SignalHandling.install(stop: stop, console: console)
        defer { withExtendedLifetime(signals) {} }
        let recorders = exporter == nil ? nil : MetricsRecorders()
        return try body(console) { event in
            console.handle(event)
            recorders?.record(event)
        }
    }
}

/// Each job's (each job and target's, in a fleet run) metrics recorder, fed from every worker thread.
final class MetricsRecorders: Sendable {
    private let recorders = Mutex<[String: RunMetrics]>([:])

    func record(_ event: RunEvent) {
        recorders.withLock { recorders in
            let key = event.job + "\u{1F}" + (event.target ?? "")
            let recorder = recorders[key] ?? RunMetrics(job: event.job, target: event.target)
            recorders[key] = recorder
            recorder.record(event)
        }
    }
}

struct Run: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Run one or more job files, one after another.",
        discussion: """
            Every flag can also come from the environment, as BACKFILL_<FLAG> (BACKFILL_MAX_RUNTIME=50m, \
            BACKFILL_LOG_FORMAT=json, BACKFILL_RESTART=true …); a flag beats its variable, an empty variable \
            counts as unset, and an invalid value exits 2 naming the variable.

            Exit codes: 0 done, 1 failed, 2 invalid job file/flag/database object, 3 stopped before done, \
            4 another runner holds the job.

            With --targets, the job runs against every database of a targets file (docs/fleet.md), each \
            exactly as with --database, `concurrency` at a time, the canary first; --max-runtime and \
            signals stop every target. Exit 0 when every target is done, else the code of the first \
            target in file order that did not finish (3 when the ones that ran are done but some never started).
            """)

    @Argument(help: "Job files (YAML).")
    var files: [String]

    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    @OptionGroup var output: OutputOptions
    var logFormat: LogFormat { output.logFormat }

    @Option(name: .long, help: "Stop after the batch in flight once this much time has passed (90s, 10m, 2h); exit 3, resumable. Env: \(Setting.maxRuntime).", transform: DurationArgument.init(parsing:))
    var maxRuntime: DurationArgument?

    @Flag(name: .long, inversion: .prefixedNo, help: "Discard the job's checkpoint (also one made by a changed job file) and start from the first key. Env: \(Setting.restart)=true.")
    var restart: Bool?

    @Flag(name: .long, inversion: .prefixedNo, help: "Skip the lease and add this process's workers to a job another runner holds, from any machine. Env: \(Setting.join)=true.")
    var join: Bool?

    @Option(name: .long, help: "Workers in this process, each on its own connection and thread. Default: the job file's `workers`. Env: \(Setting.workers).")
    var workers: Int?

    @Option(name: .long, help: "When a job's `requires` does not hold, re-check it every second for this long (30s, 10m) before giving up (exit 2), instead of giving up at once. Env: \(Setting.waitForRequirements).", transform: DurationArgument.init(parsing:))
    var waitForRequirements: DurationArgument?

    mutating func validate() throws {
        try Setting.maxRuntime.fill(&maxRuntime, DurationArgument.init(parsing:))
        try Setting.waitForRequirements.fill(&waitForRequirements, DurationArgument.init(parsing:))
        try Setting.restart.fill(&restart)
        try Setting.join.fill(&join)
        let workersSource = try Setting.workers.fill(&workers)
        if let workers, !(1...1024).contains(workers) { throw ValidationError("\(workersSource) must be from 1 to 1024") }
        if join == true && restart == true {
            throw ValidationError("--join cannot be combined with --restart: a joining process adds workers to a run another process holds, and only that runner may start the job over")
        }
    }

    func run() throws {
        let specs = try files.map(loadSpec)
        let targets = try fleet.load()
        let stop = StopSignal()
        let started = Date()
        try output.withConsole(stop: stop) { console, emit in
            for spec in specs {
                var options = RunOptions(database: db.conninfo)
                options.store = db.store
                options.maxRuntime = maxRuntime.map { max(0, $0.seconds - Date().timeIntervalSince(started)) }
                options.restart = restart ?? false
                options.join = join ?? false
                options.workers = workers
                options.waitForRequirements = waitForRequirements?.seconds
                if let targets {
                    let fleet = FleetRunner(spec: spec, targets: targets, options: options, stop: stop, emit: emit) { console.finishTarget($0, job: spec.name) }.run()
                    console.finishFleet(fleet)
                    if fleet.exitCode != 0 { throw ExitCode(fleet.exitCode) }
                    continue
                }
                let outcome = Runner(spec: spec, options: options, stop: stop, emit: emit).run()
                console.finish(outcome, job: spec.name)
                if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
            }
        }
    }
}

/// SIGINT and SIGTERM: stop after the batch in flight; if it is still running 2 s later, cancel it.
/// A second signal cancels every statement in flight (batches, health checks, `check_sql`) and
/// exits 3 at once. The console reports each signal (a `signal` event with JSON logs).
enum SignalHandling {
    private static let received = Atomic<Int>(0)

    static func install(stop: StopSignal, console: Console) -> [DispatchSourceSignal] {
        [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")].map { number, name in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                console.signal(name)
                stop.request()
                if received.add(1, ordering: .acquiringAndReleasing).newValue >= 2 {
                    stop.cancelInFlight()
                    console.note("backfill: second \(name): cancelled the statements in flight, exiting now (exit 3); committed batches are kept")
                    exit(3)
                }
                DispatchQueue.global().asyncAfter(deadline: .now() + 2) { stop.cancelInFlight() }
            }
            source.resume()
            return source
        }
    }
}
