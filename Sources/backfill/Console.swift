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
            switch outcome {
            case .held(let holder):
                logger.log(RunEvent(.error, job: job, [("message", .string("another runner holds this job: \(holder)")), ("exit_code", .int(4)), ("next", .string(outcome.nextStep))]))
            case .invalid(let error):
                logger.log(RunEvent(.error, job: job, [("message", .string("\(error)")), ("exit_code", .int(2)), ("next", .string(outcome.nextStep))]))
            default: break
            }
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
}

/// What is on the terminal: the progress line and when it was drawn.
private final class Screen: Sendable {
    private struct State {
        var tracker = ProgressTracker()
        var lastDraw = Date.distantPast
        var lineShown = false
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
            state.tracker.consume(event)
            let now = Date()
            if redraw, now.timeIntervalSince(state.lastDraw) >= 0.1 || event.kind != .batch {
                Self.write("\r\u{1B}[2K" + state.tracker.line(at: now))
                state.lineShown = true
                state.lastDraw = now
            } else if let interval = plainInterval, now.timeIntervalSince(state.lastDraw) >= interval, event.kind == .batch {
                Self.write(state.tracker.line(at: now) + "\n")
                state.lastDraw = now
            }
        }
    }

    /// A log line above the progress line, which is drawn again under it.
    func printLine(_ line: String) {
        state.withLock { state in
            if state.lineShown { Self.write("\r\u{1B}[2K") }
            Self.write(ConnectionInfo.scrub(line) + "\n")
            if state.lineShown { Self.write(state.tracker.line(at: Date())) }
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
