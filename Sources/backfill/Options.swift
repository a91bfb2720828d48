import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

/// Where the database and the checkpoint store are.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "PostgreSQL URL or connection string (default: DATABASE_URL, then libpq's PG* variables and ~/.pgpass).")
    var database: String?

    @Option(name: .long, help: "Schema of the checkpoint store.")
    var schema: String = "backfill"

    var conninfo: String? {
        if let database, !database.isEmpty { return database }
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty { return url }
        return nil
    }

    var store: CheckpointStore { CheckpointStore(schema: schema) }

    /// A connection string libpq cannot read is a bad flag (exit 2), reported without quoting it.
    func validate() throws {
        if let conninfo, let problem = ConnectionInfo.problem(in: conninfo) {
            throw ValidationError("\(database?.isEmpty == false ? "--database" : "DATABASE_URL"): the connection string \(problem) (it is not shown, so that no password reaches the logs)")
        }
    }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Writes a line to standard error, with anything that looks like a password removed.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((ConnectionInfo.scrub(line) + "\n").utf8))
}

/// Parses `90s`, `10m`, `2h`, `1h30m`, `500ms` into seconds.
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    let seconds: Double
    let description: String

    init?(argument: String) {
        guard let value = BackfillCore.parseDuration(argument) else { return nil }
        seconds = value
        description = argument
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
