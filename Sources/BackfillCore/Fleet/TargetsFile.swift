import Foundation
import PostgresClient
import Yams

/// One database a fleet run reaches: a shard, a tenant, a region.
public struct FleetTarget: Sendable, Hashable {
    /// Its name in the targets file (a job name's rule): in events, logs, metrics and status.
    public var name: String
    /// Its place in the file, from 0 (`--target-index`, a Kubernetes Indexed Job's
    /// `JOB_COMPLETION_INDEX`).
    public var index: Int
    /// The connection string with its `${VAR}`s filled in from the environment. Never printed:
    /// `ConnectionInfo.describe` gives the words for people.
    public var database: String
    /// The server it is on, `host:port` as the connection string gives them: targets that share
    /// one count together against `per_host`.
    public var server: String

    public init(name: String, index: Int, database: String, server: String? = nil) {
        self.name = name
        self.index = index
        self.database = database
        self.server = server ?? Self.server(of: database)
    }

    /// `host:port` of a connection string: its `host` (else `hostaddr`, else `PGHOST`, else the
    /// local socket) and its `port` (else `PGPORT`, else 5432), as written.
    public static func server(of conninfo: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let settings = ConnectionInfo.parse(conninfo)
        func value(_ keys: [String], _ variable: String, _ fallback: String) -> String {
            keys.lazy.compactMap { settings[$0] }.first { !$0.isEmpty } ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
        }
        return value(["host", "hostaddr"], "PGHOST", "(local socket)") + ":" + value(["port"], "PGPORT", "5432")
    }
}

/// What a targets file says to do when a target fails (exit 1 or 2).
public enum TargetFailurePolicy: String, Sendable, CaseIterable {
    /// Start no new target; the running ones finish.
    case stop
    /// Go on with the other targets.
    case `continue`
}

/// Which of a targets file's targets a run takes: all, some by name (`--target`), or the N-th
/// (`--target-index`).
public struct TargetSelection: Sendable, Hashable {
    public var names: [String]
    public var index: Int?

    public init(names: [String] = [], index: Int? = nil) {
        self.names = names
        self.index = index
    }

    public static let all = TargetSelection()
}

/// A targets file: the databases one job runs against, and how many at once.
///
/// ```yaml
/// targets:
///   - name: shard-a
///     database: postgresql://app@db1/shard_a
///   - name: shard-c
///     database: ${SHARD_C_URL}
/// concurrency: 2
/// canary: shard-a
/// on_target_failure: stop
/// per_host: 1
/// ```
public struct TargetsFile: Sendable {
    public var file: String
    /// The selected targets, in file order.
    public var targets: [FleetTarget]
    /// Every target's name, in file order (selected or not).
    public var names: [String]
    /// Targets running at once (default 1).
    public var concurrency = 1
    /// The target that runs alone first; the others start once it is done. Nil when the file
    /// names none or the selection leaves it out.
    public var canary: String?
    public var onTargetFailure = TargetFailurePolicy.stop
    /// Targets running at once on one server (`FleetTarget.server`); nil: no limit but `concurrency`.
    public var perHost: Int?

    static let fields = ["targets", "concurrency", "canary", "on_target_failure", "per_host"]
    static let targetFields = ["name", "database"]

    /// Reads, checks and selects from a targets file; `environment` fills `${VAR}`.
    public static func load(path: String, selection: TargetSelection = .all,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws(JobFileError) -> TargetsFile {
        try parse(yaml: JobSpec.readText(path, kind: "targets file"), file: path, selection: selection, environment: environment)
    }

    /// Parses and checks a targets file's text, every problem in one pass (the first error with
    /// the others in `others`): the fields, the names, the connection strings, and the
    /// `${VAR}`s of the selected targets (a target not selected need not have its variables set,
    /// so that each pod of an Indexed Job carries only its own secret).
    public static func parse(yaml: String, file: String, selection: TargetSelection = .all,
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws(JobFileError) -> TargetsFile {
        let reader = FieldReader(file: file)
        let root = try reader.compose(yaml, emptyFix: "list the databases under `targets:`, each with `name` and `database`")
        guard case .mapping = root else {
            throw reader.error(nil, root, "must be a mapping of fields (`targets: …`)", fix: "start the file with `targets:`, then one `- name: …` and `database: …` per target")
        }
        let fields = try reader.mapping(root, path: nil, allowed: fields)
        var result = TargetsFile(file: file, targets: [], names: [])

        // The targets: names first, so that the selection can be checked.
        struct Entry { var name: String?; var database: String?; var databaseNode: Node?; var node: Node }
        var entries: [Entry] = []
        let listFix = "write `targets:` then one `- name: shard-a` / `  database: postgresql://app@db1/shard_a` per target"
        switch fields["targets"] {
        case nil:
            reader.report(reader.error("targets", nil, "is required but missing", fix: listFix))
        case .sequence(let items)? where !items.isEmpty:
            for (index, item) in items.enumerated() {
                let path = "targets[\(index)]"
                guard let target = reader.attempt({ () throws(JobFileError) in try reader.mapping(item, path: path, allowed: targetFields) }) else {
                    entries.append(Entry(node: item))
                    continue
                }
                // A target's own field, named with its place: `targets[2].database`.
                func required(_ field: String, fix: String) throws(JobFileError) -> String {
                    do {
                        return try reader.requiredString(target, field, fix: fix)
                    } catch {
                        var error = error
                        error.field = "\(path).\(field)"
                        error.line = error.line ?? item.mark?.line
                        throw error
                    }
                }
                let name = reader.attempt { () throws(JobFileError) -> String in
                    let name = try required("name", fix: "give the target a name such as `name: shard-a`")
                    guard JobSpec.isValidName(name) else {
                        throw reader.error("\(path).name", target["name"], "`\(name)` is not a valid target name", fix: JobSpec.nameRule)
                    }
                    if entries.contains(where: { $0.name == name }) {
                        throw reader.error("\(path).name", target["name"], "the name `\(name)` is given to two targets", fix: "give every target its own name")
                    }
                    return name
                }
                let database = reader.attempt { () throws(JobFileError) in
                    try required("database", fix: "give the target's connection string, e.g. `database: postgresql://app@db1/shard_a` or `database: ${SHARD_A_URL}`")
                }
                entries.append(Entry(name: name, database: database, databaseNode: target["database"] ?? item, node: item))
            }
        case let node?:
            reader.report(reader.error("targets", node, "must be a non-empty list of targets", fix: listFix))
        }
        result.names = entries.compactMap(\.name)

        result.concurrency = reader.int(fields, "concurrency", 1, 1...1024)
        if fields["per_host"] != nil { result.perHost = reader.int(fields, "per_host", 1, 1...1024) }
        if let policy = reader.attempt({ () throws(JobFileError) in try reader.choice(fields, "on_target_failure", TargetFailurePolicy.self) }) {
            result.onTargetFailure = policy ?? .stop
        }
        let canary = reader.attempt { () throws(JobFileError) -> String? in
            guard let canary = try reader.optionalString(fields, "canary") else { return nil }
            guard result.names.contains(canary) || entries.contains(where: { $0.name == nil }) else {
                throw reader.error("canary", fields["canary"], "names no target: `\(canary)`" + near(canary, result.names),
                                   fix: "name one of the targets (\(result.names.joined(separator: ", "))), or remove `canary`")
            }
            return canary
        } ?? nil

        // The selection, then the selected targets' connection strings.
        let selected = reader.attempt { () throws(JobFileError) in try select(selection, from: entries.map(\.name), reader: reader) } ?? []
        for (index, entry) in entries.enumerated() {
            guard let name = entry.name, selected.contains(index), let written = entry.database else { continue }
            let field = "targets[\(index)].database"
            guard let database = reader.attempt({ () throws(JobFileError) in
                try fill(written, target: name, field: field, node: entry.databaseNode, environment: environment, reader: reader)
            }) else { continue }
            if let problem = ConnectionInfo.problem(in: database) {
                reader.report(reader.error(field, entry.databaseNode, "target `\(name)`: the connection string \(problem) (it is not shown, so that no password reaches the logs)",
                                           fix: "correct the target's `database`" + (written.contains("${") ? " (or the variable it names)" : "")))
                continue
            }
            result.targets.append(FleetTarget(name: name, index: index, database: database, server: FleetTarget.server(of: database, environment: environment)))
        }
        result.canary = canary.flatMap { name in result.targets.contains { $0.name == name } ? name : nil }
        if let problems = reader.combined { throw problems }
        return result
    }

    /// The places (from 0) of the targets a selection takes; an unknown name or an index past
    /// the end is a problem. `names` has nil for a target whose name is missing or invalid.
    static func select(_ selection: TargetSelection, from names: [String?], reader: FieldReader) throws(JobFileError) -> Set<Int> {
        if let index = selection.index {
            guard selection.names.isEmpty else {
                throw reader.error(nil, nil, "--target and --target-index were both given", fix: "use one of them")
            }
            guard names.indices.contains(index) else {
                throw reader.error("targets", nil, "--target-index \(index) is past the end: the file has \(names.count) targets (indexes 0 to \(names.count - 1))",
                                   fix: "give an index from 0 to \(names.count - 1); for a Kubernetes Indexed Job, set `completions: \(names.count)`")
            }
            return [index]
        }
        guard !selection.names.isEmpty else { return Set(names.indices) }
        let known = names.compactMap { $0 }
        let unknown = selection.names.filter { !known.contains($0) }
        if let first = unknown.first {
            // Reported, and the names that are right still checked (their variables, their URLs).
            reader.report(reader.error("targets", nil, "--target \(unknown.map { "`\($0)`" }.joined(separator: ", ")) names no target in this file" + near(first, known),
                               fix: "use the names of the file's targets: \(known.joined(separator: ", "))"))
        }
        return Set(names.indices.filter { names[$0].map(selection.names.contains) ?? false })
    }

    /// A connection string with its `${VAR}`s filled in; every unset (or empty) variable is a
    /// problem naming it and the target.
    static func fill(_ written: String, target: String, field: String, node: Node?, environment: [String: String], reader: FieldReader) throws(JobFileError) -> String {
        var text = ""
        var rest = Substring(written)
        var missing: [String] = []
        while let start = rest.range(of: "${") {
            text += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw reader.error(field, node, "target `\(target)`: `${` is not closed by `}`", fix: "write the variable as `${NAME}`")
            }
            let name = String(rest[start.upperBound..<end])
            guard name.first.map({ $0 == "_" || ($0.isASCII && $0.isLetter) }) == true, name.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }) else {
                throw reader.error(field, node, "target `\(target)`: `${\(name)}` is not a variable name", fix: "write `${NAME}` with letters, digits and `_`, starting with a letter or `_`")
            }
            if let value = environment[name], !value.isEmpty { text += value } else { missing.append(name) }
            rest = rest[rest.index(after: end)...]
        }
        guard missing.isEmpty else {
            let list = missing.map { "`\($0)`" }.joined(separator: ", ")
            throw reader.error(field, node, "target `\(target)`: the environment variable\(missing.count > 1 ? "s" : "") \(list) \(missing.count > 1 ? "are" : "is") not set (or empty)",
                               fix: "set \(missing.joined(separator: ", ")) to the target's connection string (in Kubernetes, from a Secret), or leave the target out with --target; nothing was changed")
        }
        return text + rest
    }

    /// ` (did you mean `x`?)` for a name close to one of `names`.
    static func near(_ name: String, _ names: [String]) -> String {
        guard let close = names.min(by: { editDistance($0, name) < editDistance($1, name) }), editDistance(close, name) <= max(2, name.count / 3) else { return "" }
        return " (did you mean `\(close)`?)"
    }
}
