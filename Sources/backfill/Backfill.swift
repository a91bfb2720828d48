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
            Exit codes: 0 done · 1 failed (committed progress kept) · 2 invalid job file, flag or \
            database object (nothing changed) · 3 stopped before done (run again to resume) · \
            4 another runner holds this job.
            """,
        version: "backfill \(BackfillVersion.current) (libpq \(LibPQ.version))",
        subcommands: [
            Run.self, Plan.self, Status.self, Pause.self, Resume.self, Cancel.self, Verify.self,
            Rehearse.self, Demo.self,
        ]
    )

    /// Parses and runs the command, mapping a bad flag or argument to exit 2 as the contract
    /// says (ArgumentParser's own code for it is 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

