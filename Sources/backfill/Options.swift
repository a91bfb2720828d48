import ArgumentParser
import BackfillCore
import Foundation

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
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Writes a line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
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
