import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient
import Logging

/// A failure of a command, as the user sees it: what happened, what to do next, and the exit
/// code. Commands throw it; `Backfill.main` prints it, the same way for every command.
struct CommandFailure: Error {
    let message: String
    let next: String
    let exitCode: Int32

    /// An invalid job file, flag or database object: exit 2, nothing changed.
    static func invalid(_ message: String, next: String = "fix what the message names, then run again; nothing was changed") -> CommandFailure {
        CommandFailure(message: message, next: next, exitCode: 2)
    }
}

/// The commands whose messages follow `--log-format`.
protocol LogFormatted {
    var logFormat: LogFormat { get }
}

/// Prints a command's failure on stderr in one voice: `backfill: …` then `next: …` for people,
/// or with JSON logs one object `{"event":"error","message":…,"exit_code":…,"next":…}`.
enum FailureReport {
    static func print(_ failure: CommandFailure, json: Bool) {
        if json {
            var logger = Logger(label: "backfill") { JSONLogHandler(label: $0) }
            logger.logLevel = .info
            logger.error("\(ConnectionInfo.scrub(failure.message))", metadata: [
                "event": "error", "message": .string(ConnectionInfo.scrub(failure.message)),
                "exit_code": .stringConvertible(Int64(failure.exitCode)), "next": .string(failure.next),
            ])
        } else {
            printError("backfill: " + failure.message)
            printError("next: " + failure.next)
        }
    }

    /// The log format a command line asks for, read before (or without) parsing it: the
    /// `--log-format` flag, else `BACKFILL_LOG_FORMAT`. For reporting a line that does not parse.
    static func requestedLogFormat(_ arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment) -> LogFormat? {
        for (index, argument) in arguments.enumerated() {
            if argument == "--" { break }
            if argument.hasPrefix("--log-format=") { return LogFormat(rawValue: String(argument.dropFirst("--log-format=".count))) }
            if argument == "--log-format", index + 1 < arguments.count { return LogFormat(rawValue: arguments[index + 1]) }
        }
        return environment[Setting.logFormat.rawValue].flatMap(LogFormat.init(rawValue:))
    }
}
