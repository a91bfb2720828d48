import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

@main
struct Backfill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Run large PostgreSQL data backfills as many short, resumable, lock-friendly transactions.",
        discussion: """
            Exit codes: 0 done; 1 failed (committed progress kept); 2 invalid job file, flag or \
            database object (nothing changed); 3 stopped before done (run again to resume); \
            4 another runner holds this job.
            """,
        version: "backfill \(BackfillVersion.current) (libpq \(LibPQ.version))",
        subcommands: [
            Run.self, Plan.self, Status.self, Wait.self, Tune.self, Pause.self, Resume.self, Cancel.self, Forget.self, Unlock.self, Verify.self,
            BadRows.self, Revert.self, Rehearse.self, Demo.self,
        ]
    )

    /// Parses and runs the command, and reports every failure in one place: a `CommandFailure`
    /// as `backfill: …` and `next: …` (or one JSON object), a bad flag or argument as exit 2 (the
    /// contract's code; ArgumentParser's own is 64), anything unforeseen as exit 1.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        var json = FailureReport.requestedLogFormat(arguments) == .json
        do {
            var command = try parseAsRoot(arguments)
            if let formatted = command as? LogFormatted { json = formatted.logFormat == .json }
            try command.run()
        } catch let failure as CommandFailure {
            FailureReport.print(failure, json: json)
            Foundation.exit(failure.exitCode)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            switch exitCode(for: error) {
            case .success:
                exit(withError: error)  // --help, --version, completion scripts
            case .validationFailure:
                let command = arguments.first { name in configuration.subcommands.contains { $0._commandName == name } }
                let help = command.map { "backfill \($0) --help" } ?? "backfill --help"
                FailureReport.print(.invalid(message(for: error), next: "see `\(help)` for the flags and their environment variables"), json: json)
                Foundation.exit(2)
            default:
                FailureReport.print(CommandFailure(message: message(for: error), next: "check the message above; committed work, if any, is kept", exitCode: 1), json: json)
                Foundation.exit(1)
            }
        }
    }
}
