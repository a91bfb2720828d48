import PostgresClient
import Yams

extension JobSpec {
    /// The fields a job file may contain, by section.
    static let topLevelFields = ["name", "table", "key", "where", "set", "action", "sql", "batch", "timeouts", "retry", "throttle", "on_error", "workers", "repeat", "catch_up_passes", "requires", "finalize", "cdc", "journal", "walk"]
    static let batchFields = ["size", "min", "max", "target_ms", "max_ms", "pause_ms", "pages", "min_pages", "max_pages"]
    static let timeoutFields = ["lock_ms", "statement_ms"]
    static let retryFields = ["max_attempts", "backoff_ms", "max_backoff_ms", "reconnect_timeout_ms"]
    static let throttleFields = ["max_rows_per_second", "max_replication_lag_ms", "when_blocking", "blocking_wait_ms", "check_sql", "pause_during_autovacuum",
                                 "max_slot_lag_mb", "slots", "max_wal_mb_per_second", "max_archive_backlog", "fail_open"]
    static let onErrorFields = ["action", "max_rows", "exit_zero"]
    static let cdcFields = ["origin", "messages"]

    /// Parses and validates a job file's text. Everything that can be checked without a database is
    /// checked here, every field even after a problem: all the problems are thrown at once, as
    /// the first `JobFileError` with the rest in its `others`, each with its line, field and fix.
    public static func parse(yaml: String, file: String) throws(JobFileError) -> JobSpec {
        let reader = FieldReader(file: file)
        let root = try reader.compose(yaml, emptyFix: "write at least `name`, `table`, `key` and one of `set`, `action: delete` or `sql` (see jobs/ for examples)")
        let fields = try reader.mapping(root, path: nil, allowed: topLevelFields)

        // Every field is read even after a problem, so that one pass reports them all.
        let name = reader.attempt { () throws(JobFileError) -> String in
            let name = try reader.requiredString(fields, "name", fix: "add a unique name such as `name: accounts-fill-balance-cents`")
            guard JobSpec.isValidName(name) else {
                throw reader.error("name", fields["name"], "`\(name)` is not a valid job name", fix: JobSpec.nameRule)
            }
            return name
        }
        let table = reader.attempt { () throws(JobFileError) -> (String, [String]) in
            let table = try reader.requiredString(fields, "table", fix: "name the table to backfill, e.g. `table: public.accounts`")
            guard let parts = Identifier.parseQualified(table), parts.count <= 2 else {
                throw reader.error("table", fields["table"], "`\(table)` is not a table name", fix: "write `table` or `schema.table`; quote names with capitals or spaces: `\"My Schema\".\"Accounts\"`")
            }
            return (table, parts)
        }
        let walk = reader.attempt { () throws(JobFileError) in try reader.walk(fields) } ?? .key
        let key = walk == .physical ? [JobSpec.physicalKey] : reader.attempt { () throws(JobFileError) in try reader.key(fields) }
        let whereClause = reader.attempt { () throws(JobFileError) in
            try reader.optionalString(fields, "where").map { text throws(JobFileError) in
                try reader.checkFragment(text, field: "where", node: fields["where"])
            }
        } ?? nil
        let action = reader.attempt { () throws(JobFileError) in try reader.action(fields, whereClause: whereClause) }

        var spec = JobSpec(name: name ?? "", table: table?.0 ?? "", key: key ?? [], whereClause: whereClause, action: action ?? .delete, file: file)
        spec.tableParts = table?.1 ?? []
        spec.walk = walk
        if walk == .physical {
            reader.checkPhysical(fields, spec: spec)
            spec.batch = JobSpec.Batch(size: 8, min: 1, max: 8192)
        }

        if let node = fields["batch"], let b = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "batch", allowed: batchFields) }) {
            // A physical walk's batches are sized in heap pages, a key walk's in keys: each has its
            // own fields, so that a size is never read in the other unit.
            let (size, min, max) = walk == .physical ? ("pages", "min_pages", "max_pages") : ("size", "min", "max")
            for (field, other) in walk == .physical ? [("size", "pages"), ("min", "min_pages"), ("max", "max_pages")] : [("pages", "size"), ("min_pages", "min"), ("max_pages", "max")] where b[field] != nil {
                reader.report(reader.error("batch.\(field)", b[field],
                                           walk == .physical ? "`batch.\(field)` counts keys; a `walk: physical` job's batches are sized in heap pages" : "`batch.\(field)` counts heap pages, which only a `walk: physical` job's batches are sized in",
                                           fix: "write `batch.\(other)` instead"))
            }
            spec.batch.size = reader.int(b, "batch.\(size)", spec.batch.size, 1...10_000_000)
            spec.batch.min = reader.int(b, "batch.\(min)", spec.batch.min, 1...10_000_000)
            spec.batch.max = reader.int(b, "batch.\(max)", spec.batch.max, 1...10_000_000)
            spec.batch.targetMs = reader.int(b, "batch.target_ms", spec.batch.targetMs, 1...600_000)
            if b["max_ms"] != nil {
                spec.batch.maxMs = reader.int(b, "batch.max_ms", 4 * spec.batch.targetMs, 1...86_400_000)
                if let ceiling = spec.batch.maxMs, ceiling < spec.batch.targetMs {
                    reader.report(reader.error("batch.max_ms", b["max_ms"], "`batch.max_ms` (\(ceiling)) is below `batch.target_ms` (\(spec.batch.targetMs))", fix: "make the ceiling at least the target (default 4 × target_ms)"))
                }
            }
            spec.batch.pauseMs = reader.int(b, "batch.pause_ms", spec.batch.pauseMs, 0...3_600_000)
            if spec.batch.min > spec.batch.max {
                reader.report(reader.error("batch.\(min)", b[min], "`batch.\(min)` (\(spec.batch.min)) is larger than `batch.\(max)` (\(spec.batch.max))", fix: "make `batch.\(min)` at most `batch.\(max)`"))
            } else if !(spec.batch.min...spec.batch.max).contains(spec.batch.size) {
                reader.report(reader.error("batch.\(size)", b[size] ?? node, "`batch.\(size)` (\(spec.batch.size)) is outside `batch.\(min)`…`batch.\(max)` (\(spec.batch.min)…\(spec.batch.max))", fix: "pick a first batch size between `batch.\(min)` and `batch.\(max)`"))
            }
        }
        if let node = fields["timeouts"], let t = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "timeouts", allowed: timeoutFields) }) {
            spec.timeouts.lockMs = reader.int(t, "timeouts.lock_ms", spec.timeouts.lockMs, 1...600_000)
            spec.timeouts.statementMs = reader.int(t, "timeouts.statement_ms", spec.timeouts.statementMs, 1...86_400_000)
        }
        if let node = fields["retry"], let r = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "retry", allowed: retryFields) }) {
            spec.retry.maxAttempts = reader.int(r, "retry.max_attempts", spec.retry.maxAttempts, 1...1000)
            spec.retry.backoffMs = reader.int(r, "retry.backoff_ms", spec.retry.backoffMs, 1...600_000)
            spec.retry.maxBackoffMs = reader.int(r, "retry.max_backoff_ms", spec.retry.maxBackoffMs, 1...3_600_000)
            spec.retry.reconnectTimeoutMs = reader.int(r, "retry.reconnect_timeout_ms", spec.retry.reconnectTimeoutMs, 0...86_400_000)
        }
        if let node = fields["throttle"], let t = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "throttle", allowed: throttleFields) }) {
            spec.throttle.maxRowsPerSecond = reader.int(t, "throttle.max_rows_per_second", spec.throttle.maxRowsPerSecond, 0...1_000_000_000)
            spec.throttle.maxReplicationLagMs = reader.int(t, "throttle.max_replication_lag_ms", spec.throttle.maxReplicationLagMs, 0...86_400_000)
            spec.throttle.whenBlocking = reader.bool(t, "throttle.when_blocking", spec.throttle.whenBlocking)
            if t["blocking_wait_ms"] != nil {
                spec.throttle.blockingWaitMs = reader.int(t, "throttle.blocking_wait_ms", spec.batch.targetMs, 0...600_000)
            }
            spec.throttle.maxSlotLagMB = reader.int(t, "throttle.max_slot_lag_mb", spec.throttle.maxSlotLagMB, 0...1_000_000_000)
            spec.throttle.slots = reader.attempt { () throws(JobFileError) in
                try reader.names(t, "throttle.slots", example: "slots: [debezium, orders_sub]")
            } ?? nil
            spec.throttle.maxWalMBPerSecond = reader.int(t, "throttle.max_wal_mb_per_second", spec.throttle.maxWalMBPerSecond, 0...1_000_000)
            spec.throttle.maxArchiveBacklog = reader.int(t, "throttle.max_archive_backlog", spec.throttle.maxArchiveBacklog, 0...1_000_000_000)
            spec.throttle.failOpen = reader.bool(t, "throttle.fail_open", spec.throttle.failOpen)
            spec.throttle.pauseDuringAutovacuum = reader.bool(t, "throttle.pause_during_autovacuum", spec.throttle.pauseDuringAutovacuum)
            spec.throttle.checkSQL = reader.attempt { () throws(JobFileError) in
                try reader.optionalString(t, "check_sql").map { text throws(JobFileError) in
                    try reader.checkFragment(text, field: "throttle.check_sql", node: t["check_sql"])
                }
            } ?? nil
        }
        if let node = fields["on_error"], let e = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "on_error", allowed: onErrorFields) }) {
            if let action = reader.attempt({ () throws(JobFileError) in try reader.choice(e, "on_error.action", OnError.Action.self) }) {
                spec.onError.action = action ?? spec.onError.action
            }
            spec.onError.maxRows = reader.int(e, "on_error.max_rows", spec.onError.maxRows, 1...1_000_000_000)
            spec.onError.exitZero = reader.bool(e, "on_error.exit_zero", spec.onError.exitZero)
            if spec.onError.action == .stop, let extra = ["max_rows", "exit_zero"].first(where: { e[$0] != nil }) {
                reader.report(reader.error("on_error.\(extra)", e[extra], "`on_error.\(extra)` applies only to `action: skip`", fix: "add `action: skip` to `on_error`, or remove `\(extra)`"))
            }
        }
        if let node = fields["cdc"], let c = reader.attempt({ () throws(JobFileError) in try reader.mapping(node, path: "cdc", allowed: cdcFields) }) {
            spec.cdc.origin = reader.attempt { () throws(JobFileError) in try reader.origin(c) } ?? nil
            spec.cdc.messages = reader.bool(c, "cdc.messages", spec.cdc.messages)
        }
        spec.workers = reader.int(fields, "workers", 1, 1...1024)
        spec.repeats = reader.bool(fields, "repeat", false)
        spec.journal = reader.bool(fields, "journal", false)
        if spec.journal, walk == .physical {
            reader.report(reader.error("journal", fields["journal"], "`journal` keeps each changed row's key so that `backfill revert` can find it again; a `walk: physical` job has no key, and a row's ctid changes with every update",
                                       fix: "remove `journal: true`, or walk the table by a unique key (`key: [...]`)"))
        }
        if spec.journal, case .sql = spec.action {
            reader.report(reader.error("journal", fields["journal"], "`journal` records what `set` or `action: delete` replaced; an `sql` action's changes cannot be journaled",
                                       fix: "remove `journal: true`, or write the change as `set` (or `action: delete`)"))
        }
        spec.catchUpPasses = reader.int(fields, "catch_up_passes", spec.catchUpPasses, 0...100)
        spec.requires = reader.attempt { () throws(JobFileError) in
            try reader.optionalString(fields, "requires").map { text throws(JobFileError) in
                try reader.checkFragment(text, field: "requires", node: fields["requires"])
            }
        } ?? nil
        spec.finalize = reader.finalizeSteps(fields, repeats: spec.repeats)
        if let problems = reader.combined { throw problems }
        return spec
    }
}

/// Reads typed fields out of YAML nodes, turning every problem into a `JobFileError` that names
/// the field, its line and the fix, and collecting them so that one pass reports them all.
final class FieldReader {
    let file: String
    /// The problems found so far, in the order of the file's fields.
    private(set) var problems: [JobFileError] = []

    init(file: String) { self.file = file }

    func report(_ problem: JobFileError) {
        // A field with a hidden character is reported once, not again by its own check.
        guard !problems.contains(where: { $0.field == problem.field && $0.problem == problem.problem }) else { return }
        problems.append(problem)
    }

    /// Runs one field's checks; a problem is recorded and the result is nil.
    func attempt<T>(_ body: () throws(JobFileError) -> T) -> T? {
        do {
            return try body()
        } catch {
            report(error)
            return nil
        }
    }

    func error(_ field: String?, _ node: Node?, _ problem: String, fix: String) -> JobFileError {
        JobFileError(file: file, field: field, line: node?.mark?.line, problem: problem, fix: fix)
    }

    /// The file's YAML as a node tree, its hidden characters reported; an empty file or one that
    /// is not YAML is thrown at once.
    func compose(_ yaml: String, emptyFix: String) throws(JobFileError) -> Node {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw error(nil, nil, "the file is empty", fix: emptyFix)
            }
            root = node
        } catch let error as JobFileError {
            throw error
        } catch let error as YamlError {
            throw yamlError(error)
        } catch {
            throw self.error(nil, nil, "could not be read as YAML: \(error)", fix: "check the YAML syntax")
        }
        refuseHiddenCharacters(root, path: nil)
        return root
    }

    /// The problems found so far as one error (the first, with the rest in `others`); nil when none.
    var combined: JobFileError? {
        guard var first = problems.first else { return nil }
        first.others = Array(problems.dropFirst())
        return first
    }

    func yamlError(_ error: YamlError) -> JobFileError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return JobFileError(file: file, field: nil, line: mark.line, problem: "is not valid YAML: \(problem) (line \(mark.line), column \(mark.column))", fix: "correct the YAML at that line; indent nested fields with spaces, not tabs")
        case .duplicatedKeysInMapping(let duplicates, _):
            return JobFileError(file: file, field: duplicates.sorted().first, problem: "a field is given twice: \(duplicates.sorted().joined(separator: ", "))", fix: "keep one of them")
        default:
            return JobFileError(file: file, field: nil, problem: "is not valid YAML: \(error)", fix: "check the YAML syntax")
        }
    }

    private func dotted(_ path: String?, _ name: String) -> String { path.map { "\($0).\(name)" } ?? name }

    func mapping(_ node: Node, path: String?, allowed: [String]) throws(JobFileError) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            throw error(path, node, path == nil ? "must be a mapping of fields (`name: …`, `table: …`)" : "must be a mapping of fields", fix: path == nil ? "start the file with `name:`, `table:`, `key:`" : "indent its fields under `\(path!):`, e.g. `  \(allowed[0]): …`")
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else { throw error(path, keyNode, "field names must be plain words", fix: "write `field: value`") }
            let key = scalar.string
            guard allowed.contains(key) else {
                let suggestion = allowed.min { editDistance($0, key) < editDistance($1, key) }
                let near = suggestion.flatMap { editDistance($0, key) <= max(2, key.count / 3) ? $0 : nil }
                report(error(
                    dotted(path, key), keyNode, "unknown field `\(key)`" + (near.map { " (did you mean `\($0)`?)" } ?? ""),
                    fix: near.map { "rename it to `\($0)`" } ?? "remove it; the fields here are: \(allowed.joined(separator: ", "))"))
                continue
            }
            result[key] = value
        }
        return result
    }

    func optionalString(_ fields: [String: Node], _ name: String) throws(JobFileError) -> String? {
        guard let node = fields[name] else { return nil }
        guard case .scalar(let scalar) = node else {
            throw error(name, node, "must be text", fix: "write it on one line, or as a `|` block for several lines")
        }
        let text = scalar.string.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty, !(scalar.tag.description.hasSuffix(":null")) else {
            throw error(name, node, "is empty", fix: "give it a value or remove the field")
        }
        return text
    }

    func requiredString(_ fields: [String: Node], _ name: String, fix: String) throws(JobFileError) -> String {
        guard let text = try optionalString(fields, name) else {
            throw error(name, nil, "is required but missing", fix: fix)
        }
        return text
    }

    /// A whole number in `range`, or the default (a problem is recorded when it is not one).
    func int(_ fields: [String: Node], _ dottedName: String, _ defaultValue: Int, _ range: ClosedRange<Int>) -> Int {
        let name = String(dottedName.split(separator: ".").last!)
        guard let node = fields[name] else { return defaultValue }
        guard case .scalar(let scalar) = node, let value = Int(scalar.string.replacingOccurrences(of: "_", with: "")) else {
            report(error(dottedName, node, "must be a whole number, got `\(node.scalar?.string ?? "a list or mapping")`", fix: "write a number from \(range.lowerBound) to \(range.upperBound), e.g. `\(name): \(defaultValue)`"))
            return defaultValue
        }
        guard range.contains(value) else {
            report(error(dottedName, node, "\(value) is out of range", fix: "use a number from \(range.lowerBound) to \(range.upperBound) (default \(defaultValue))"))
            return defaultValue
        }
        return value
    }

    /// true or false, or the default (a problem is recorded when it is neither).
    func bool(_ fields: [String: Node], _ dottedName: String, _ defaultValue: Bool) -> Bool {
        let name = String(dottedName.split(separator: ".").last!)
        guard let node = fields[name] else { return defaultValue }
        switch node.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report(error(dottedName, node, "must be true or false, got `\(node.scalar?.string ?? "a list or mapping")`", fix: "write `\(name): \(defaultValue)`"))
            return defaultValue
        }
    }

    /// One of an enumeration's raw values, such as `on_error.action`; nil when absent.
    func choice<T: RawRepresentable & CaseIterable>(_ fields: [String: Node], _ dottedName: String, _ type: T.Type) throws(JobFileError) -> T? where T.RawValue == String {
        let name = String(dottedName.split(separator: ".").last!)
        guard let node = fields[name] else { return nil }
        let names = T.allCases.map(\.rawValue)
        let text = node.scalar?.string ?? ""
        if let value = T(rawValue: text) { return value }
        let near = names.min { editDistance($0, text) < editDistance($1, text) }.flatMap { editDistance($0, text) <= max(2, text.count / 3) ? $0 : nil }
        throw error(dottedName, node, "unknown value `\(node.scalar?.string ?? "a list or mapping")`" + (near.map { " (did you mean `\($0)`?)" } ?? ""),
                    fix: "write one of: " + names.map { "`\(name): \($0)`" }.joined(separator: ", "))
    }

    /// A non-empty list of plain names (or one name), such as `throttle.slots`; nil when absent.
    func names(_ fields: [String: Node], _ dottedName: String, example: String) throws(JobFileError) -> [String]? {
        let name = String(dottedName.split(separator: ".").last!)
        guard let node = fields[name] else { return nil }
        let items: [Node]
        switch node {
        case .scalar: items = [node]
        case .sequence(let sequence): items = Array(sequence)
        default: items = []
        }
        let names = items.compactMap { $0.scalar?.string.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty, names.count == items.count else {
            throw error(dottedName, node, "must be a list of names", fix: "write e.g. `\(example)`, or remove the field")
        }
        return names
    }

    /// `cdc.origin`: a replication origin's name (`JobSpec.CDC.isValidOrigin`); nil when absent.
    func origin(_ fields: [String: Node]) throws(JobFileError) -> String? {
        guard let node = fields["origin"] else { return nil }
        let rule = "write a name of 1 to 50 letters, digits, `-`, `_` or `.`, starting with a letter or digit, not `pg_…`, `none` or `any`, e.g. `origin: backfill`; or remove the field"
        // YAML's booleans and null are not names: `origin: true` means a name was forgotten.
        guard case .scalar(let scalar) = node, !["true", "false", "yes", "no", "on", "off", "null", "~", ""].contains(scalar.string.lowercased()) else {
            throw error("cdc.origin", node, "must be the name of a replication origin, got `\(node.scalar?.string ?? "a list or mapping")`", fix: rule)
        }
        let name = scalar.string.trimmingCharacters(in: .whitespaces)
        guard JobSpec.CDC.isValidOrigin(name) else {
            throw error("cdc.origin", node, "`\(name)` is not a usable replication origin name", fix: rule)
        }
        return name
    }

    func walk(_ fields: [String: Node]) throws(JobFileError) -> JobSpec.Walk {
        guard let text = try optionalString(fields, "walk") else { return .key }
        guard let walk = JobSpec.Walk(rawValue: text.lowercased()) else {
            throw error("walk", fields["walk"], "`\(text)` is not a walk", fix: "write `walk: physical` (heap page order, for a table without a usable unique key) or leave it out to walk by `key`")
        }
        return walk
    }

    /// What a `walk: physical` job cannot have: a `key` (the walk is by page), no `where` (a row is
    /// changed only while it matches `where`, which is what makes the walk exactly once), an `sql`
    /// action (its statement's changes cannot be checked against `where`).
    func checkPhysical(_ fields: [String: Node], spec: JobSpec) {
        if let node = fields["key"] {
            report(error("key", node, "`key` and `walk: physical` exclude each other: a physical walk goes by heap page, not by key",
                         fix: "remove `key` to walk in page order, or remove `walk: physical` to walk by the key"))
        }
        if spec.whereClause == nil {
            report(error("where", nil, "is required with `walk: physical`: without a key, a row is changed exactly once only because the job changes rows that match `where` and its change makes `where` false",
                         fix: "add the condition that says a row still needs the change, e.g. `where: kind IS NULL` with `set: {kind: ...}`"))
        }
        if case .sql = spec.action {
            report(error("sql", fields["sql"], "`sql` cannot be used with `walk: physical`: its statement's changes cannot be checked to leave `where` false, so a row could be changed twice",
                         fix: "write the change as `set` (or `action: delete`), or walk the table by a unique key (`key: [...]`)"))
        }
    }

    func key(_ fields: [String: Node]) throws(JobFileError) -> [String] {
        let fix = "name the key columns in index order, e.g. `key: [id]` or `key: [tenant_id, id]`"
        guard let node = fields["key"] else { throw error("key", nil, "is required but missing", fix: fix) }
        var names: [String] = []
        switch node {
        case .scalar(let scalar): names = [scalar.string]
        case .sequence(let sequence):
            for item in sequence {
                guard case .scalar(let scalar) = item else { throw error("key", item, "must be a list of column names", fix: fix) }
                names.append(scalar.string)
            }
        default: throw error("key", node, "must be a list of column names", fix: fix)
        }
        guard !names.isEmpty else { throw error("key", node, "is empty", fix: fix) }
        names = try names.map { text throws(JobFileError) in
            guard let name = Identifier.parseColumn(text) else {
                throw error("key", node, "`\(text)` is not a column name", fix: "write the column as SQL names it: `id`, or quoted for capitals and spaces: `'\"Line ID\"'`")
            }
            return name
        }
        guard Set(names).count == names.count else { throw error("key", node, "names a column twice", fix: fix) }
        return names
    }

    func action(_ fields: [String: Node], whereClause: String?) throws(JobFileError) -> JobSpec.Action {
        let actionName = try optionalString(fields, "action")
        let sql = try optionalString(fields, "sql")
        let setNode = fields["set"]
        let oneOf = "give exactly one of `set:` (update columns), `action: delete` (purge rows matching `where`) or `sql:` (a statement over the CTE `batch`)"
        if let actionName, !["update", "delete", "sql"].contains(actionName) {
            throw error("action", fields["action"], "unknown action `\(actionName)`", fix: "use `update` (with `set`), `delete` or `sql` (with `sql`)")
        }
        let given = [setNode != nil, actionName == "delete", sql != nil].filter { $0 }.count
        guard given == 1 else {
            throw error(given == 0 ? "set" : nil, nil, given == 0 ? "the job does nothing" : "the job has more than one action", fix: oneOf)
        }
        if let setNode {
            if let actionName, actionName != "update" { throw error("action", fields["action"], "`action: \(actionName)` does not go with `set`", fix: oneOf) }
            guard case .mapping(let mapping) = setNode else {
                throw error("set", setNode, "must map column names to SQL expressions", fix: "write e.g. `set:` then `  balance_cents: (balance * 100)::bigint`")
            }
            var assignments: [JobSpec.Assignment] = []
            for (columnNode, valueNode) in mapping {
                guard let written = columnNode.scalar?.string, let column = Identifier.parseColumn(written) else {
                    throw error("set", columnNode, "column names must be plain text", fix: "write `column: expression`; quote names with capitals or spaces: `'\"Line ID\"': expression`")
                }
                guard let expression = valueNode.scalar?.string.trimmingCharacters(in: .whitespacesAndNewlines), !expression.isEmpty,
                      !(valueNode.scalar?.tag.description.hasSuffix(":null") ?? false) || valueNode.scalar?.string == "NULL"
                else {
                    throw error("set.\(column)", valueNode, "needs a SQL expression", fix: "write e.g. `\(column): NULL` or `\(column): now()`; quote expressions that YAML would misread")
                }
                guard !assignments.contains(where: { $0.column == column }) else {
                    throw error("set.\(column)", columnNode, "sets column `\(column)` twice", fix: "keep one expression for it")
                }
                assignments.append(.init(column: column, expression: try checkFragment(expression, field: "set.\(column)", node: valueNode)))
            }
            guard !assignments.isEmpty else {
                throw error("set", setNode, "is empty", fix: "list at least one `column: expression`")
            }
            return .update(assignments)
        }
        if actionName == "delete" {
            guard whereClause != nil else {
                throw error("where", nil, "`action: delete` needs `where` (the rows to purge)", fix: "add `where:`; to delete every row on purpose, write `where: 'true'`")
            }
            return .delete
        }
        if let actionName, actionName != "sql" { throw error("action", fields["action"], "`action: \(actionName)` does not go with `sql`", fix: oneOf) }
        _ = try checkFragment(sql!, field: "sql", node: fields["sql"], allowTrailingSemicolon: true)
        return .sql(try checkFragment(SQLFragment.droppingTrailingSemicolon(sql!), field: "sql", node: fields["sql"]))
    }

    /// Checks one piece of operator SQL (`SQLFragment`) and returns it as it will be spliced: a
    /// fragment that ends inside a `--` comment gets a newline, so that the comment cannot swallow
    /// the batch statement's closing parenthesis.
    func checkFragment(_ text: String, field: String, node: Node?, allowTrailingSemicolon: Bool = false) throws(JobFileError) -> String {
        if let problem = SQLFragment.problem(in: text, allowTrailingSemicolon: allowTrailingSemicolon) {
            throw error(field, node, problem, fix: "write one SQL \(field == "sql" ? "statement" : "expression") with balanced parentheses and quotes")
        }
        return SQLFragment.endsInLineComment(text) ? text + "\n" : text
    }

    /// Refuses control characters and characters a reviewer cannot see anywhere in the file, in
    /// field names and values alike, naming the field.
    func refuseHiddenCharacters(_ node: Node, path: String?) {
        let fix = "retype the text without it; data that needs such a character can write it in SQL, e.g. chr(13) or E'\\r'"
        switch node {
        case .scalar(let scalar):
            if let problem = SQLFragment.hiddenCharacter(in: scalar.string) { report(error(path, node, problem, fix: fix)) }
        case .mapping(let mapping):
            for (key, value) in mapping {
                let name = key.scalar?.string ?? "?"
                if let problem = SQLFragment.hiddenCharacter(in: name) { report(error(path, key, "a field name " + problem, fix: fix)) }
                refuseHiddenCharacters(value, path: dotted(path, name))
            }
        case .sequence(let sequence):
            for item in sequence { refuseHiddenCharacters(item, path: path) }
        case .alias:
            break
        }
    }
}

extension Node {
    var scalar: Node.Scalar? {
        if case .scalar(let s) = self { return s }
        return nil
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

import Foundation
