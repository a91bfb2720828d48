import ArgumentParser
import BackfillCore
import Foundation

struct Wait: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Deploy gate: block until a job is done (exit 0), failed or cancelled (exit 1), or --timeout passes (exit 3).",
        discussion: """
            Reads the checkpoint store read-only once a second and never takes the lease; a progress line \
            (state, rows done, %, ETA) every 5 s on stderr, or `wait` events with --log-format json. \
            A paused job, or one whose runner is gone, is waited for: another run may still finish it. \
            So is a job not registered yet (its run has not started, or waits for its `requires`), even \
            before the store's schema exists: start the gate with the Job. Exit 2 only for an invalid \
            job name, connection string or targets file.

            With --targets, the gate of a whole fleet: 0 once the job is done on every target, 1 as soon \
            as one failed or was cancelled, 3 on timeout; a target that cannot be reached is waited for.
            """)

    @Argument(help: "The job's name.") var job: String
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    @Option(name: .long, help: "Give up after this long (90s, 10m, 2h): exit 3. Default: wait for as long as it takes.", transform: DurationArgument.init(parsing:))
    var timeout: DurationArgument?
    @Option(name: .customLong("log-format"), help: "Progress on stderr: text or json (one `wait` event per line). Default: text. Env: \(Setting.logFormat).")
    var givenLogFormat: LogFormat?

    var logFormat: LogFormat { givenLogFormat ?? .text }

    mutating func validate() throws {
        try Setting.logFormat.fill(&givenLogFormat)
        guard JobSpec.isValidName(job) else {
            throw ValidationError("`\(job)` is not a valid job name: \(JobSpec.nameRule)")
        }
    }

    func run() throws {
        let file = try fleet.load()
        let console = Console(logFormat: logFormat, progress: .never)
        let stop = StopSignal()
        let signals = SignalHandling.install(stop: stop, console: console)
        defer { withExtendedLifetime(signals) {} }
        let outcome = if let file {
            FleetWait.run(job: job, targets: file.targets, store: db.store, timeout: timeout?.seconds, stop: stop,
                          connect: { try connect($0, as: "wait") }, emit: console.handle)
        } else {
            try JobWait.run(job: job, store: db.store, timeout: timeout?.seconds, db: try connect(db, as: "wait"), stop: stop, emit: console.handle)
        }
        guard outcome.exitCode == 0 else { throw CommandFailure(message: outcome.message, next: outcome.next, exitCode: outcome.exitCode) }
        print(outcome.message)
    }
}
