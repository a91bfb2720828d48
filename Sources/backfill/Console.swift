import BackfillCore
import Foundation
import Logging
import PostgresClient

enum ProgressMode: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}

import ArgumentParser

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

    /// The final summary, on every exit path, and what to do next. With JSON logs the `done`,
    /// `stop` and `error` events already carry the summary; a refusal becomes an `error` object.
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
