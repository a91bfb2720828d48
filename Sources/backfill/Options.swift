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

/// A duration given as `90s`, `10m`, `2h`, `1h30m` or `500ms`; a number without a unit is refused.
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    let seconds: Double
    let description: String

    /// Parses the text, or throws saying what is wrong with it and how to write it.
    init(parsing text: String) throws {
        seconds = try BackfillCore.parseDuration(text)
        description = text
    }

    init?(argument: String) {
        try? self.init(parsing: argument)
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
