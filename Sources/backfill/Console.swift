import ArgumentParser
import BackfillCore
import Foundation
import Logging
import PostgresClient
import Synchronization

enum ProgressMode: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}

/// The terminal side of a run: events through swift-log (JSON lines, or text lines for people),
/// and the progress line — redrawn in place on a terminal, printed every 10 s otherwise. Safe to
/// call from every worker thread: the screen's state sits behind a `Mutex`.
final class Console: Sendable {
    private let screen: Screen
    private let logger: EventLogger
    private let json: Bool

    init(logFormat: LogFormat, progress: ProgressMode) {
        let terminal = isatty(STDERR_FILENO) == 1
        json = logFormat == .json
        let (redraw, plainInterval): (Bool, Double?) = switch (progress, logFormat) {
        case (.never, _): (false, nil)
        case (.always, _): (true, nil)
        case (.auto, .json): (false, nil)
        case (.auto, .text): terminal ? (true, nil) : (false, 10)
        }
        let screen = Screen(redraw: redraw, plainInterval: plainInterval)
        self.screen = screen
        let write: @Sendable (String) -> Void = { line in screen.printLine(line) }
        var log = Logger(label: "backfill") { label -> any LogHandler in
            if logFormat == .json { return JSONLogHandler(label: label, write: write) }
            return TextLogHandler(label: label, write: write)
        }
        log.logLevel = .info
        logger = EventLogger(logger: log, peopleOnly: logFormat == .text)
    }

    /// Takes one run event: logs it, and updates the progress line.
    func handle(_ event: RunEvent) {
        logger.log(event)
        screen.progress(event)
    }

    /// A line of the command's own (the demo's steps): as it is, or a JSON object with `message`.
    func note(_ message: String) {
        logger.logger.info("\(message)")
    }

    /// A signal arrived: the run stops after the batch in flight. With JSON logs, a `signal` event.
    func signal(_ name: String) {
        let job = screen.job
        let message = "received \(name); stopping after the batch in flight (cancelling it if still running in 2 s)"
        if json {
            var metadata: Logger.Metadata = ["event": "signal", "signal": .string(name), "message": .string(message)]
            if !job.isEmpty { metadata["job"] = .string(job) }
            logger.logger.notice("\(message)", metadata: metadata)
        } else {
            logger.logger.notice("backfill: \(message)")
        }
    }

    /// The final summary, on every exit path, and what to do next. With JSON logs the `done`,
    /// `stop` and `error` events already carry the summary, `exit_code` and `next`; a refusal
    /// becomes an `error` object with the same fields.
    func finish(_ outcome: RunOutcome, job: String) {
        screen.clearLine()
        if json {
            refusal(outcome, job: job, target: nil).map { logger.log($0.event) }
            return
        }
        switch outcome {
        case .done(let s), .stopped(_, let s), .failed(_, let s):
            printError("summary: " + s.line)
        case .held(let holder):
            printError("backfill: another runner holds this job: \(holder)")
        case .invalid(let error):
            printError("backfill: invalid: \(error)")
        }
        printError("next: " + outcome.nextStep)
    }

    /// The `error` event of a run that never started its workers (held, invalid); nil otherwise.
    private func refusal(_ outcome: RunOutcome, job: String, target: String?) -> (event: RunEvent, message: String)? {
        let message: String
        switch outcome {
        case .held(let holder): message = "another runner holds this job: \(holder)"
        case .invalid(let error): message = "\(error)"
        default: return nil
        }
        var event = RunEvent(.error(.init(cause: .refused(message: message), exitCode: outcome.exitCode, next: outcome.nextStep)), job: job)
        event.target = target
        return (event, message)
    }

    /// One target of a fleet run ended. A target refused (held, invalid) says why now: its run
    /// has no `done`/`stop`/`error` event of its own.
    func finishTarget(_ result: TargetResult, job: String) {
        guard let outcome = result.outcome, let (event, message) = refusal(outcome, job: job, target: result.target.name) else { return }
        if json {
            logger.log(event)
        } else {
            screen.clearLine()
            if case .invalid(let error) = outcome {
                printError("backfill: \(job) [\(result.target.name)]: invalid: \(error)")
            } else {
                printError("backfill: \(job) [\(result.target.name)]: skipped: " + message)
            }
        }
    }

    /// The fleet's summary: a line per target and the total, and what to do next; with JSON
    /// logs, the `fleet` event.
    func finishFleet(_ outcome: FleetOutcome) {
        screen.clearLine()
        if json {
            logger.log(outcome.event)
            return
        }
        for result in outcome.results { printError("summary: \(outcome.job) [\(result.target.name)] " + result.line.dropFirst(result.target.name.count + 2)) }
        printError("summary: \(outcome.job) " + outcome.totalLine)
        printError("next: " + outcome.nextStep)
    }
}

/// What is on the terminal: the progress line and when it was drawn.
private final class Screen: Sendable {
    private struct State {
        /// One tracker per target of a fleet run (`""` for a run of one database).
        var trackers: [String: ProgressTracker] = [:]
        /// The target whose line is on the screen.
        var current = ""
        var lastDraw = Date.distantPast
        var lastPlain: [String: Date] = [:]
        var lineShown = false

        var tracker: ProgressTracker { trackers[current] ?? ProgressTracker() }

        /// The progress line, with the target in front during a fleet run.
        func line(at now: Date) -> String { (current.isEmpty ? "" : "[\(current)] ") + tracker.line(at: now) }
    }
    private let state = Mutex(State())
    private let redraw: Bool
    private let plainInterval: Double?

    init(redraw: Bool, plainInterval: Double?) {
        self.redraw = redraw
        self.plainInterval = plainInterval
    }

    var job: String { state.withLock { $0.tracker.job } }

    /// Feeds the progress line; redraws it, or prints it every `plainInterval` seconds.
    func progress(_ event: RunEvent) {
        state.withLock { state in
            state.current = event.target ?? ""
            state.trackers[state.current, default: ProgressTracker()].consume(event)
            let now = Date()
            if redraw, now.timeIntervalSince(state.lastDraw) >= 0.1 || event.kind != .batch {
                Self.write("\r\u{1B}[2K" + state.line(at: now))
                state.lineShown = true
                state.lastDraw = now
            } else if let interval = plainInterval, now.timeIntervalSince(state.lastPlain[state.current] ?? .distantPast) >= interval, event.kind == .batch {
                Self.write(state.line(at: now) + "\n")
                state.lastPlain[state.current] = now
            }
        }
    }

    /// A log line above the progress line, which is drawn again under it.
    func printLine(_ line: String) {
        state.withLock { state in
            if state.lineShown { Self.write("\r\u{1B}[2K") }
            Self.write(ConnectionInfo.scrub(line) + "\n")
            if state.lineShown { Self.write(state.line(at: Date())) }
        }
    }

    /// Removes the progress line (before the summary).
    func clearLine() {
        state.withLock { state in
            if state.lineShown { Self.write("\r\u{1B}[2K") }
            state.lineShown = false
        }
    }

    private static func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
