import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

/// Where the database and the checkpoint store are.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "PostgreSQL URL or connection string. Env: \(Setting.database), then DATABASE_URL; without any, libpq's PG* variables and ~/.pgpass.")
    var database: String?

    @Option(name: .customLong("schema"), help: "Schema of the checkpoint store. Default: backfill. Env: \(Setting.schema).")
    var givenSchema: String?

    /// Fills the options from their variables; a connection string libpq cannot read is a bad
    /// flag (exit 2), reported without quoting it.
    mutating func validate() throws {
        let source = try Setting.database.fill(&database) { $0 }
        try Setting.schema.fill(&givenSchema) { $0 }
        if let conninfo, let problem = ConnectionInfo.problem(in: conninfo) {
            throw ValidationError("\(database == nil ? "DATABASE_URL" : source): the connection string \(problem) (it is not shown, so that no password reaches the logs)")
        }
    }

    var schema: String { givenSchema ?? "backfill" }

    var conninfo: String? {
        if let database { return database }
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty { return url }
        return nil
    }

    var store: CheckpointStore { CheckpointStore(schema: schema) }
}

/// The environment variables that stand in for flags, 12-factor style: `BACKFILL_<FLAG>`. A flag
/// beats its variable; an empty variable counts as unset; a value that does not parse exits 2
/// naming the variable. Each flag's `--help` names its variable.
enum Setting: String, CustomStringConvertible {
    case database = "BACKFILL_DATABASE"
    case schema = "BACKFILL_SCHEMA"
    case logFormat = "BACKFILL_LOG_FORMAT"
    case progress = "BACKFILL_PROGRESS"
    case metricsFile = "BACKFILL_METRICS_FILE"
    case metricsPort = "BACKFILL_METRICS_PORT"
    case metricsBind = "BACKFILL_METRICS_BIND"
    case maxRuntime = "BACKFILL_MAX_RUNTIME"
    case workers = "BACKFILL_WORKERS"
    case restart = "BACKFILL_RESTART"
    case join = "BACKFILL_JOIN"
    case waitForRequirements = "BACKFILL_WAIT_FOR_REQUIREMENTS"
    case targets = "BACKFILL_TARGETS"
    case targetIndex = "BACKFILL_TARGET_INDEX"

    var description: String { rawValue }

    /// `--metrics-port` for `BACKFILL_METRICS_PORT`.
    var flag: String { "--" + rawValue.dropFirst("BACKFILL_".count).lowercased().replacingOccurrences(of: "_", with: "-") }

    /// The variable's value, when it is set and not empty.
    var value: String? {
        guard let text = ProcessInfo.processInfo.environment[rawValue], !text.isEmpty else { return nil }
        return text
    }

    /// Gives `option` the variable's value when the flag did not give one, parsed by `parse`.
    /// Returns where the value came from (the flag or the variable), to name in later messages.
    @discardableResult
    func fill<T>(_ option: inout T?, _ parse: (String) throws -> T) throws -> String {
        guard option == nil, let text = value else { return flag }
        do {
            option = try parse(text)
        } catch {
            throw ValidationError("\(rawValue)=\(text) is not valid: \(error)")
        }
        return rawValue
    }

    /// `fill` with the parsing the flag itself uses.
    @discardableResult
    func fill<T: ExpressibleByArgument>(_ option: inout T?) throws -> String {
        try fill(&option) { text in
            guard let parsed = T(argument: text) else { throw ExpectedValue(type: T.self) }
            return parsed
        }
    }

    /// `fill` for an on/off flag: true, false, 1, 0, yes, no, on or off.
    @discardableResult
    func fill(_ option: inout Bool?) throws -> String {
        try fill(&option) { text in
            switch text.lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: throw ExpectedValue(choices: ["true", "false"])
            }
        }
    }

    /// What a value should have looked like.
    struct ExpectedValue: Error, CustomStringConvertible {
        let description: String

        init(choices: [String]) { description = "expected " + choices.joined(separator: " or ") }

        init<T: ExpressibleByArgument>(type: T.Type) {
            if !T.allValueStrings.isEmpty {
                description = "expected " + T.allValueStrings.joined(separator: " or ")
            } else {
                description = T.self == Int.self ? "expected a whole number" : "expected a \(T.self)"
            }
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
