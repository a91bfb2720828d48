import PostgresClient

/// A key column as the catalog describes it.
public struct KeyColumn: Sendable, Hashable {
    public var name: String
    /// The SQL type as `format_type` prints it (`bigint`, `text`, `timestamp with time zone`).
    public var type: String
    public init(name: String, type: String) {
        self.name = name
        self.type = type
    }
}

/// The SQL of one job, generated from the spec and the key's catalog types. Pure: no database.
///
/// Every batch is bounded by a key range, `(key) > (last) AND (key) <= (upper)`, so that the
/// planner uses an index range scan at every batch size. Key values travel as text parameters cast
/// to the key's type; identifiers are quoted.
public struct BatchStatements: Sendable, Hashable {
    /// The quoted table name.
    public let table: String
    public let key: [KeyColumn]
    /// The B-th key after the checkpoint, or failing that the last key after it; no row means no
    /// key remains. Parameters: the last key's values, then the offset (B − 1).
    public let upperBound: String
    /// The same for the first batch of a range that has no checkpoint yet. Parameter: the offset.
    public let upperBoundFromStart: String
    /// `upperBound` within a range that ends at a ceiling key (inclusive). Parameters: the last
    /// key's values, the ceiling's values, the offset.
    public let upperBoundBelowCeiling: String
    /// `upperBoundFromStart` below a ceiling. Parameters: the ceiling's values, the offset.
    public let upperBoundFromStartBelowCeiling: String
    /// For a key of one integer column (nil otherwise): the upper key found by arithmetic, the
    /// greatest key at most B past the checkpoint (below the ceiling), read from the key's index
    /// backwards, one descent instead of B index entries. Unique integers in `(last, last + B]`
    /// are at most B, so the batch walks at most B keys, and as many as the key is dense; `walked`
    /// is the span `upper - last`, the keys it walks when the key has no gaps. No row means no key
    /// in the span (a gap, or the range's end): the batch then reads `upperBound`. Parameters as
    /// `upperBound`'s and `upperBoundBelowCeiling`'s (the offset is B − 1).
    public let spanBound: String?
    public let spanBoundBelowCeiling: String?
    /// Key tuples of a sample of the table's pages, in key order, for splitting it into ranges.
    /// `%PERCENT%` stands for the TABLESAMPLE SYSTEM percentage.
    let sampleTemplate: String
    /// The batch statement. Parameters: the last key's values, then the upper key's values.
    ///
    /// For `update` and `delete` it returns one row: `rows` changed, and `outside`, how many of
    /// them lie outside the key range (never more than 0 unless operator SQL escaped its place:
    /// the runner then rolls the batch back and stops). For `sql` the keys come from a
    /// materialized CTE `batch` that locks its rows (`FOR NO KEY UPDATE`), so `where` is checked
    /// again on the newest version of a row that an application changed during the batch.
    public let batch: String
    /// The batch statement of a range's first batch. Parameters: the upper key's values.
    public let batchFromStart: String
    /// For `update` and `delete`: the data-changing statement (with `RETURNING` the key) and the
    /// range condition, to build the batch statement with the checkpoint in it.
    let change: Change?
    let changeFromStart: Change?

    /// A data-changing statement that returns the changed keys, and its key range condition.
    struct Change: Sendable, Hashable {
        var sql: String
        var range: String
        /// With `journal` for `update`: the CTE that reads and locks the old values first.
        var before: String? = nil
    }

    /// `jsonb_build_object('col', col, …)` of columns (qualified by `table` when given): the
    /// values as the journal keeps them, read back with `jsonb_populate_record`.
    static func values(_ columns: [String], of table: String?) -> String {
        "jsonb_build_object(" + columns.map { column in
            "'\(column.replacingOccurrences(of: "'", with: "''"))', " + (table.map { "\($0)." } ?? "") + Identifier.quote(column)
        }.joined(separator: ", ") + ")"
    }

    public init(spec: JobSpec, key: [KeyColumn]) {
        let table = Identifier.quoteQualified(spec.tableParts)
        self.table = table
        self.key = key
        let n = key.count
        let columns = key.map { Identifier.quote($0.name) }
        func parameters(from first: Int) -> String { Self.parameters(key, from: first) }
        let selectKeys = columns.enumerated().map { i, c in "\(c)::text AS k\(i)" }.joined(separator: ", ")
        // ORDER BY names the table's columns qualified: a bare name would mean an output column
        // first, and a key column called `k0` would then sort by its text (a full sort).
        let ascending = columns.map { "\(table).\($0)" }.joined(separator: ", ")
        let descending = columns.map { "\(table).\($0) DESC" }.joined(separator: ", ")

        // The upper key and how many keys the batch walks: the offset + 1, or, for the last batch
        // of a range (fewer keys left than asked for), a count of what is left, read only then.
        func upper(after lower: String?, ceiling: String?, offsetParameter: Int) -> String {
            let bounds = Self.bounds(key, after: lower, upTo: ceiling)
            let filter = bounds.isEmpty ? "" : " WHERE " + bounds.joined(separator: " AND ")
            return """
                (SELECT \(selectKeys), $\(offsetParameter)::bigint + 1 AS walked FROM \(table)\(filter) ORDER BY \(ascending) OFFSET $\(offsetParameter) LIMIT 1) \
                UNION ALL \
                (SELECT \(selectKeys), (SELECT count(*) FROM \(table)\(filter)) AS walked FROM \(table)\(filter) ORDER BY \(descending) LIMIT 1) LIMIT 1
                """
        }
        upperBound = upper(after: parameters(from: 1), ceiling: nil, offsetParameter: n + 1)
        upperBoundFromStart = upper(after: nil, ceiling: nil, offsetParameter: 1)
        upperBoundBelowCeiling = upper(after: parameters(from: 1), ceiling: parameters(from: n + 1), offsetParameter: 2 * n + 1)
        upperBoundFromStartBelowCeiling = upper(after: nil, ceiling: parameters(from: 1), offsetParameter: n + 1)
        func span(ceiling: String?, offsetParameter: Int) -> String {
            let last = parameters(from: 1), offset = "$\(offsetParameter)::bigint"
            // last + B in bigint, held at its largest value (no overflow near the end of bigint).
            let reach = "(CASE WHEN \(last)::bigint > 9223372036854775806 - \(offset) THEN 9223372036854775807 ELSE \(last)::bigint + \(offset) + 1 END)"
            let filter = (Self.bounds(key, after: last, upTo: ceiling) + ["\(columns[0]) <= \(reach)"]).joined(separator: " AND ")
            return "SELECT \(selectKeys), (\(columns[0])::numeric - \(last)::numeric)::bigint AS walked FROM \(table) WHERE \(filter) ORDER BY \(descending) LIMIT 1"
        }
        let integer = n == 1 && ["smallint", "integer", "bigint"].contains(key[0].type)
        spanBound = integer ? span(ceiling: nil, offsetParameter: 2) : nil
        spanBoundBelowCeiling = integer ? span(ceiling: parameters(from: 2), offsetParameter: 3) : nil
        sampleTemplate = "SELECT \(selectKeys) FROM \(table) TABLESAMPLE SYSTEM (%PERCENT%) ORDER BY \(ascending)"

        func statement(lower: String?, upper: String) -> (plain: String, change: Change?) {
            let range = Self.bounds(key, after: lower, upTo: upper).joined(separator: " AND ")
            let predicate = range + (spec.whereClause.map { " AND (\($0))" } ?? "")
            let keys = columns.joined(separator: ", ")
            // Each changed row returns whether its key lies outside the range (operator SQL that
            // escaped its place), so that one pass over the changed rows counts both.
            var returning = "RETURNING NOT (\(range)) AS outside"
            // journal: each changed row's key (text forms, as the store keeps keys) and values.
            let journalKey = "jsonb_build_array(" + columns.map { "\(table).\($0)::text" }.joined(separator: ", ") + ")"
            let change: String
            var before: String?
            switch spec.action {
            case .update(let assignments):
                let sets = assignments.map { "\(Identifier.quote($0.column)) = (\($0.expression))" }.joined(separator: ", ")
                if spec.journal {
                    // The old values, read by a materialized CTE of the same statement that locks
                    // its rows (FOR NO KEY UPDATE, with `where` checked again on a row's newest
                    // version): nobody can change a row between this read and the UPDATE, so the
                    // old values are exactly what the UPDATE replaces.
                    let aliases = columns.enumerated().map { i, c in "\(c) AS backfill_k\(i)" }.joined(separator: ", ")
                    let join = columns.enumerated().map { i, c in "\(table).\(c) = backfill_before.backfill_k\(i)" }.joined(separator: " AND ")
                    before = "backfill_before AS MATERIALIZED (SELECT \(aliases), \(Self.values(assignments.map(\.column), of: nil)) AS backfill_old "
                        + "FROM \(table) WHERE \(predicate) FOR NO KEY UPDATE)"
                    returning += ", \(journalKey) AS backfill_key, backfill_before.backfill_old, \(Self.values(assignments.map(\.column), of: table)) AS backfill_new"
                    change = "UPDATE \(table) SET \(sets) FROM backfill_before WHERE \(join) AND \(predicate) \(returning)"
                } else {
                    change = "UPDATE \(table) SET \(sets) WHERE \(predicate) \(returning)"
                }
            case .delete:
                // journal: the whole deleted row, as DELETE … RETURNING sees it.
                if spec.journal { returning += ", \(journalKey) AS backfill_key, to_jsonb(\(table).*) AS backfill_old, NULL::jsonb AS backfill_new" }
                change = "DELETE FROM \(table) WHERE \(predicate) \(returning)"
            case .sql(let sql):
                return ("WITH batch AS MATERIALIZED (SELECT \(keys) FROM \(table) WHERE \(predicate) FOR NO KEY UPDATE) \(sql)", nil)
            }
            let prefix = before.map { $0 + ", " } ?? ""
            return ("WITH \(prefix)changed AS (\(change)) SELECT \(Self.tally) FROM changed", Change(sql: change, range: range, before: before))
        }
        let after = statement(lower: parameters(from: 1), upper: parameters(from: n + 1))
        let fromStart = statement(lower: nil, upper: parameters(from: 1))
        batch = after.plain
        batchFromStart = fromStart.plain
        change = after.change
        changeFromStart = fromStart.change
    }

    /// The counts over the changed rows, in one pass: `rows`, and `outside` (changed rows whose key
    /// lies outside the batch's range).
    static let tally = "count(*) AS rows, count(*) FILTER (WHERE outside) AS outside"

    /// For `update` and `delete` (nil for `sql`): SQL expressions, over the batch statement's
    /// `tally` of its changed rows, for how many rows it changed and how many of them lie outside
    /// its range, for a checkpoint `UPDATE` that runs in the same statement
    /// (`batch(afterKey:checkpoint:)`).
    public func counts(afterKey: Bool) -> (rows: String, outside: String)? {
        guard (afterKey ? change : changeFromStart) != nil else { return nil }
        return ("(SELECT rows FROM tally)", "(SELECT outside FROM tally)")
    }

    /// The batch statement of `update` or `delete` with the range's checkpoint `UPDATE` as a
    /// CTE of the same statement: the data and the checkpoint move together, in one statement.
    /// The changed rows are counted once (`tally`, read by the checkpoint and the result). The
    /// checkpoint's parameters follow the batch's (lower key, upper key).
    /// With `journal`, the store's INSERT of the changed rows into the journal (reading
    /// `changed`'s `backfill_key`, `backfill_old`, `backfill_new`) is one more CTE: the batch's
    /// journal rows commit with it, or not at all.
    public func batch(afterKey: Bool, checkpoint: String, journal: String? = nil) -> String {
        let plain = afterKey ? batch : batchFromStart
        guard let change = afterKey ? change : changeFromStart else { return plain }
        let before = change.before.map { $0 + ", " } ?? ""
        let journaled = journal.map { ", journal AS (\($0))" } ?? ""
        return "WITH \(before)changed AS (\(change.sql)), tally AS (SELECT \(Self.tally) FROM changed), checkpoint AS (\(checkpoint))\(journaled) "
            + "SELECT rows, outside FROM tally"
    }

    /// One revert batch (`backfill revert`), one statement: the next journal rows below a journal
    /// `seq` (`$2`, NULL for the newest), newest first, at most `$3`; each row gets its old values
    /// back only when its current values are still the ones the job wrote (`IS NOT DISTINCT
    /// FROM`, per column, checked again on a row's newest version by the UPDATE itself), a deleted
    /// row is inserted again unless its key (or another unique value) is taken; the journal rows
    /// left are recorded as conflicts, and the revert's checkpoint moves in the same statement,
    /// only while the revert's lease row carries its token (`$4`). Parameters: job, last seq,
    /// limit, lease token. Columns `rows`, `restored`, `conflicts`, `last` (the batch's lowest
    /// seq, NULL when the journal is walked), `leased`. `columns` are the table's columns a
    /// deleted row is inserted with (not generated ones). A batch holds each key once: it ends
    /// before the first journal row whose key a newer row of the batch has (a `repeat` job's
    /// key journaled in two passes), so that the newer one is put back first, by its own batch.
    public func revert(action: JobSpec.Action, tables: RevertTables, columns: [String]) -> String {
        let record = { (field: String) in "jsonb_populate_record(NULL::\(table), \(field))" }
        let restore: String
        switch action {
        case .update(let assignments):
            let match = key.enumerated().map { i, column in "\(table).\(Identifier.quote(column.name)) = (r.key ->> \(i))::\(column.type)" }
            let unchanged = assignments.map { "\(table).\(Identifier.quote($0.column)) IS NOT DISTINCT FROM (r.n).\(Identifier.quote($0.column))" }
            let sets = assignments.map { "\(Identifier.quote($0.column)) = (r.o).\(Identifier.quote($0.column))" }.joined(separator: ", ")
            restore = "UPDATE \(table) SET \(sets) FROM r WHERE \((match + unchanged).joined(separator: " AND ")) RETURNING r.key"
        case .delete, .sql:
            let list = columns.map(Identifier.quote)
            let restoredKey = "jsonb_build_array(" + key.map { "\(table).\(Identifier.quote($0.name))::text" }.joined(separator: ", ") + ")"
            restore = "INSERT INTO \(table) (\(list.joined(separator: ", "))) OVERRIDING SYSTEM VALUE SELECT \(list.map { "(r.o).\($0)" }.joined(separator: ", ")) FROM r "
                + "ON CONFLICT DO NOTHING RETURNING \(restoredKey) AS key"
        }
        return """
            WITH candidates AS MATERIALIZED (SELECT j.seq, j.pass, j.key, j.old, j.new FROM \(tables.journal) j WHERE j.job = $1 AND ($2::bigint IS NULL OR j.seq < $2::bigint) ORDER BY j.seq DESC LIMIT $3), \
            batch AS MATERIALIZED (SELECT * FROM candidates WHERE seq > (SELECT coalesce(max(c.seq), -1) FROM candidates c WHERE EXISTS (SELECT 1 FROM candidates d WHERE d.key = c.key AND d.seq > c.seq))), \
            r AS MATERIALIZED (SELECT seq, key, \(record("old")) AS o, \(record("new")) AS n FROM batch), \
            restored AS (\(restore)), \
            conflicts AS (INSERT INTO \(tables.conflicts) (job, pass, key) SELECT $1, b.pass, b.key FROM batch b WHERE NOT EXISTS (SELECT 1 FROM restored x WHERE x.key = b.key) \
            ON CONFLICT (job, pass, key) DO UPDATE SET detected_at = now() RETURNING 1), \
            checkpoint AS (UPDATE \(tables.jobs) SET revert_last = coalesce((SELECT min(seq) FROM batch), revert_last), \
            revert_restored = revert_restored + (SELECT count(*) FROM restored), revert_conflicts = revert_conflicts + (SELECT count(*) FROM conflicts), updated_at = now() \
            WHERE name = $1 AND EXISTS (SELECT 1 FROM \(tables.leases) l WHERE l.job = $1 AND l.token = $4) RETURNING 1) \
            SELECT (SELECT count(*) FROM batch) AS rows, (SELECT count(*) FROM restored) AS restored, (SELECT count(*) FROM conflicts) AS conflicts, \
            (SELECT min(seq) FROM batch) AS last, EXISTS (SELECT 1 FROM checkpoint) AS leased
            """
    }

    /// The key of an upper-bound row, and how many keys the batch up to it walks.
    public func upperKey(_ row: PostgresRow) -> (key: [String], walked: Int) {
        (row.cells.prefix(key.count).map { $0.string ?? "" }, row["walked"].int ?? 0)
    }

    /// What a batch statement's result says it changed: rows, and rows outside the key range
    /// (0 for a `sql` action, whose statement is the operator's own).
    public func changed(by result: QueryResult) -> (rows: Int64, outside: Int64) {
        guard result.columns == ["rows", "outside"], let row = result.rows.first else { return (result.affectedRows, 0) }
        return (row["rows"].int64 ?? 0, row["outside"].int64 ?? 0)
    }

    /// The upper-bound query for a range position: after a last key or from the start, below a
    /// ceiling or open-ended. Parameters in order: last key, ceiling, offset.
    public func upperBound(afterKey: Bool, belowCeiling: Bool) -> String {
        switch (afterKey, belowCeiling) {
        case (true, true): upperBoundBelowCeiling
        case (true, false): upperBound
        case (false, true): upperBoundFromStartBelowCeiling
        case (false, false): upperBoundFromStart
        }
    }

    /// The span query after a checkpoint (`spanBound`), below a ceiling or open-ended; nil when
    /// the key is not one integer column.
    public func spanBound(belowCeiling: Bool) -> String? { belowCeiling ? spanBoundBelowCeiling : spanBound }

    /// A sample of key tuples in key order from about `percent` % of the table's pages.
    public func sampleKeys(percent: Double) -> String {
        percent >= 100
            ? sampleTemplate.replacingOccurrences(of: " TABLESAMPLE SYSTEM (%PERCENT%)", with: "")
            : sampleTemplate.replacingOccurrences(of: "%PERCENT%", with: String(format: "%.6f", max(percent, 0.000001)))
    }

    /// `SELECT lo, hi` of the first key column as float8, when it is a number or a timestamp
    /// (min and max come from the two ends of the key's index); nil for other types.
    public var numericKeyBounds: String? {
        let first = key[0]
        let numeric = ["smallint", "integer", "bigint", "real", "double precision"].contains(first.type) || first.type.hasPrefix("numeric")
        let temporal = first.type.hasPrefix("timestamp") || first.type == "date"
        guard numeric || temporal else { return nil }
        let column = Identifier.quote(first.name)
        let value = { (agg: String) in temporal ? "extract(epoch FROM \(agg)(\(column)))::float8" : "\(agg)(\(column))::float8" }
        return "SELECT \(value("min")) AS lo, \(value("max")) AS hi FROM \(table)"
    }

    /// A range of heap pages, `ctid >= $first::tid AND ctid < $(first + 1)::tid`: a TID Range Scan
    /// on PostgreSQL 14 and later.
    static func pageRange(from first: Int) -> String { "ctid >= $\(first)::tid AND ctid < $\(first + 1)::tid" }

    /// The key's columns, quoted: `"id"`, or a row `("tenant_id", "id")` for a composite key.
    static func tuple(_ key: [KeyColumn]) -> String {
        let columns = key.map { Identifier.quote($0.name) }
        return key.count == 1 ? columns[0] : "(" + columns.joined(separator: ", ") + ")"
    }

    /// Parameters `$first…` cast to the key's types, shaped like `tuple`.
    static func parameters(_ key: [KeyColumn], from first: Int) -> String {
        let list = key.enumerated().map { i, column in "$\(first + i)::\(column.type)" }
        return key.count == 1 ? list[0] : "(" + list.joined(separator: ", ") + ")"
    }

    /// The bounds of a key range: `(key) > lower` and `(key) <= upper`, each when given.
    static func bounds(_ key: [KeyColumn], after lower: String?, upTo upper: String?) -> [String] {
        let tuple = Self.tuple(key)
        return [lower.map { "\(tuple) > \($0)" }, upper.map { "\(tuple) <= \($0)" }].compactMap { $0 }
    }

    /// `(key) > (lower) AND (key) <= (upper)` for an interval, with parameters numbered from
    /// `first`; `true` for an interval with neither bound. Returns the next parameter number.
    func condition(_ interval: KeyInterval, from first: Int) -> (sql: String, next: Int) {
        let lower = interval.lower.map { _ in Self.parameters(key, from: first) }
        let next = first + (lower == nil ? 0 : key.count)
        let upper = interval.upper.map { _ in Self.parameters(key, from: next) }
        let parts = Self.bounds(key, after: lower, upTo: upper)
        return (parts.isEmpty ? "true" : parts.joined(separator: " AND "), next + (upper == nil ? 0 : key.count))
    }

    /// Which rows a remaining count reads: all, those outside some key intervals (the part of the
    /// end check that can run while the intervals are still being walked), or those inside one
    /// (read through the key's index).
    public enum RemainingScope: Sendable {
        case all
        case outside([KeyInterval])
        case within(KeyInterval)

        /// The intervals' bounds, for the parameters from `$3`.
        public var parameters: [PostgresValue] {
            switch self {
            case .all: []
            case .outside(let intervals): KeyInterval.parameters(intervals)
            case .within(let interval): KeyInterval.parameters([interval])
            }
        }
    }

    /// How many rows still match `where` (at most `$1`), leaving out the keys that the job (`$2`)
    /// quarantined in `badRows` (their text forms read back as the key's types), within `scope`
    /// (its bounds from `$3`: `RemainingScope.parameters`). With `pages`, only the rows of a range
    /// of heap pages, its `tid` bounds the two parameters after the scope's (`ChunkedCount`).
    public func remainingCount(spec: JobSpec, excludingBadRowsIn badRows: String, scope: RemainingScope = .all, pages: Bool = false) -> String? {
        guard let whereClause = spec.whereClause else { return nil }
        let columns = key.map { "\(table).\(Identifier.quote($0.name))" }
        let stored = key.enumerated().map { i, column in "(b.key ->> \(i))::\(column.type)" }
        let match = key.count == 1 ? "\(columns[0]) = \(stored[0])" : "(\(columns.joined(separator: ", "))) = (\(stored.joined(separator: ", ")))"
        var bounds = ""
        switch scope {
        case .all: break
        case .outside(let intervals):
            var next = 3
            var walking: [String] = []
            for interval in intervals {
                let condition = condition(interval, from: next)
                walking.append("(\(condition.sql))")
                next = condition.next
            }
            if !walking.isEmpty { bounds = "NOT (" + walking.joined(separator: " OR ") + ") AND " }
        case .within(let interval):
            bounds = condition(interval, from: 3).sql + " AND "
        }
        if pages {
            let first = 3 + scope.parameters.count
            bounds = Self.pageRange(from: first) + " AND " + bounds
        }
        return "SELECT count(*) AS n FROM (SELECT 1 FROM \(table) WHERE \(bounds)(\(whereClause)) "
            + "AND NOT EXISTS (SELECT 1 FROM \(badRows) b WHERE b.job = $2 AND \(match)) LIMIT $1) s"
    }
}

/// A stretch of the key space: after `lower` (from the first key when nil) up to and including
/// `upper` (to the last key when nil), as a range of the checkpoint store describes it.
public struct KeyInterval: Sendable, Hashable {
    public var lower: [String]?
    public var upper: [String]?

    public init(lower: [String]?, upper: [String]?) {
        self.lower = lower
        self.upper = upper
    }

    /// The bound parameters of intervals, in the order `BatchStatements.condition` numbers them.
    public static func parameters(_ intervals: [KeyInterval]) -> [PostgresValue] {
        intervals.flatMap { ($0.lower ?? []) + ($0.upper ?? []) }.map(PostgresValue.text)
    }
}
