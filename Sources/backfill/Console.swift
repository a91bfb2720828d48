import ArgumentParser
import BackfillCore
import Foundation
import Logging
import PostgresClient

enum ProgressMode: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}

/// The terminal side of a run: events through swift-log (JSON lines, or text lines for people),
/// and the progress line — redrawn in place on a terminal, printed every 10 s otherwise.
final class Console: @unchecked Sendable {
    private let lock = NSLock()
    private let redraw: Bool
    private let plainInterval: Double?
    private var tracker = ProgressTracker()
    private var lastDraw = Date.distantPast
    private var lineShown = false
    private var logger: EventLogger!
    private let json: Bool

    init(logFormat: LogFormat, progress: ProgressMode) {
        let terminal = isatty(STDERR_FILENO) == 1
        json = logFormat == .json
        switch (progress, logFormat) {
        case (.never, _): (redraw, plainInterval) = (false, nil)
        case (.always, _): (redraw, plainInterval) = (true, nil)
        case (.auto, .json): (redraw, plainInterval) = (false, nil)
        case (.auto, .text): (redraw, plainInterval) = terminal ? (true, nil) : (false, 10)
        }
        let write: @Sendable (String) -> Void = { [unowned self] line in self.printLine(line) }
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
        lock.withLock {
            tracker.consume(event)
            let now = Date()
            if redraw, now.timeIntervalSince(lastDraw) >= 0.1 || event.kind != .batch {
                draw(tracker.line(at: now))
                lastDraw = now
            } else if let interval = plainInterval, now.timeIntervalSince(lastDraw) >= interval, event.kind == .batch {
                writeRaw(tracker.line(at: now) + "\n")
                lastDraw = now
            }
        }
    }

    /// A line of the command's own (the demo's steps): as it is, or a JSON object with `message`.
    func note(_ message: String) {
        logger.logger.info("\(message)")
    }

    /// A signal arrived: the run stops after the batch in flight. With JSON logs, a `signal` event.
    func signal(_ name: String) {
        let job = lock.withLock { tracker.job }
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
        lock.withLock {
            if lineShown { writeRaw("\r\u{1B}[2K") }
            lineShown = false
        }
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

    private func printLine(_ line: String) {
        lock.withLock {
            if lineShown { writeRaw("\r\u{1B}[2K") }
            writeRaw(ConnectionInfo.scrub(line) + "\n")
            if lineShown { writeRaw(tracker.line(at: Date())) }
        }
    }

    private func draw(_ line: String) {
        writeRaw("\r\u{1B}[2K" + line)
        lineShown = true
    }

    private func writeRaw(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
