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
/// to the key's type; identifiers are quoted. The statements run at every batch are built once,
/// with `Slots` for the values each batch binds (`binding(_:lower:ceiling:upper:offset:)`), so
/// their text is the same from one batch to the next.
public struct BatchStatements: Sendable, Hashable {
    /// The quoted table name.
    public let table: String
    public let key: [KeyColumn]
    /// A `walk: physical` job's statements: the key is `ctid`, and each changed row also says
    /// whether it still matches `where` (`still`), which the checkpoint holds at 0.
    public let physical: Bool
    /// The B-th key after the checkpoint, or failing that the last key after it; no row means no
    /// key remains. Parameters: the last key's values (`Slots.lower`), then the offset (B − 1).
    public let upperBound: SQL
    /// The same for the first batch of a range that has no checkpoint yet. Parameter: the offset.
    public let upperBoundFromStart: SQL
    /// `upperBound` within a range that ends at a ceiling key (inclusive). Parameters: the last
    /// key's values, the ceiling's values (`Slots.ceiling`), the offset.
    public let upperBoundBelowCeiling: SQL
    /// `upperBoundFromStart` below a ceiling. Parameters: the ceiling's values, the offset.
    public let upperBoundFromStartBelowCeiling: SQL
    /// For a key of one integer column (nil otherwise): the upper key found by arithmetic, the
    /// greatest key at most B past the checkpoint (below the ceiling), read from the key's index
    /// backwards, one descent instead of B index entries. Unique integers in `(last, last + B]`
    /// are at most B, so the batch walks at most B keys, and as many as the key is dense; `walked`
    /// is the span `upper - last`, the keys it walks when the key has no gaps. No row means no key
    /// in the span (a gap, or the range's end): the batch then reads `upperBound`. Parameters as
    /// `upperBound`'s and `upperBoundBelowCeiling`'s (the offset is B − 1).
    public let spanBound: SQL?
    public let spanBoundBelowCeiling: SQL?
    /// Key tuples of a sample of the table's pages, in key order, for splitting it into ranges.
    /// `%PERCENT%` stands for the TABLESAMPLE SYSTEM percentage.
    let sampleTemplate: String
    /// The batch statement. Parameters: the last key's values (`Slots.lower`), then the upper
    /// key's values (`Slots.upper`).
    ///
    /// For `update` and `delete` it returns one row: `rows` changed, and `outside`, how many of
    /// them lie outside the key range (never more than 0 unless operator SQL escaped its place:
    /// the runner then rolls the batch back and stops). For `sql` the keys come from a
    /// materialized CTE `batch` that locks its rows (`FOR NO KEY UPDATE`), so `where` is checked
    /// again on the newest version of a row that an application changed during the batch.
    public let batch: SQL
    /// The batch statement of a range's first batch. Parameters: the upper key's values.
    public let batchFromStart: SQL
    /// For `update` and `delete`: the data-changing statement (with `RETURNING` the key) and the
    /// range condition, to build the batch statement with the checkpoint in it.
    let change: Change?
    let changeFromStart: Change?

    /// A data-changing statement that returns the changed keys, and its key range condition.
    struct Change: Sendable, Hashable {
        var sql: SQL
        var range: SQL
        /// With `journal` for `update`: the CTE that reads and locks the old values first.
        var before: SQL? = nil
    }

    /// The parameters whose values the statements take when they run.
    public enum Slots {
        /// The last key walked: the batch's lower bound (exclusive).
        public static func lower(_ count: Int) -> [SQL.Slot] { SQL.Slot.list("lower", count: count) }
        /// The range's ceiling (inclusive).
        public static func ceiling(_ count: Int) -> [SQL.Slot] { SQL.Slot.list("ceiling", count: count) }
        /// The batch's upper key (inclusive).
        public static func upper(_ count: Int) -> [SQL.Slot] { SQL.Slot.list("upper", count: count) }
        /// How many keys past the lower bound the upper key is, less one.
        public static let offset = SQL.Slot("offset")
        /// A count's limit (`remainingCount`), a revert batch's size (`revert`).
        public static let limit = SQL.Slot("limit")
        /// The job's name.
        public static let job = SQL.Slot("job")
        /// The journal `seq` a revert put back last (NULL: none yet).
        public static let lastSeq = SQL.Slot("last_seq")
        /// The revert's lease token.
        public static let token = SQL.Slot("token")
        /// A page range's `tid` bounds (`pageRange`).
        public static let pageStart = SQL.Slot("page_start")
        public static let pageEnd = SQL.Slot("page_end")
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
        physical = spec.walk == .physical
        let physical = physical
        let n = key.count
        let columns = key.map { Identifier.quote($0.name) }
        let lower = Slots.lower(n), ceiling = Slots.ceiling(n), upperKey = Slots.upper(n), offset = Slots.offset
        func parameters(_ slots: [SQL.Slot]) -> SQL { Self.parameters(key, slots) }
        let selectKeys = columns.enumerated().map { i, c in "\(c)::text AS k\(i)" }.joined(separator: ", ")
        // ORDER BY names the table's columns qualified: a bare name would mean an output column
        // first, and a key column called `k0` would then sort by its text (a full sort).
        let ascending = columns.map { "\(table).\($0)" }.joined(separator: ", ")
        let descending = columns.map { "\(table).\($0) DESC" }.joined(separator: ", ")

        // The upper key and how many keys the batch walks: the offset + 1, or, for the last batch
        // of a range (fewer keys left than asked for), a count of what is left, read only then.
        // The offset comes first in the text, last among the parameters.
        func upper(after: [SQL.Slot]?, ceiling: [SQL.Slot]?) -> SQL {
            let bounds = Self.bounds(key, after: after.map(parameters), upTo: ceiling.map(parameters))
            let filter: SQL = bounds.isEmpty ? "" : " WHERE \(bounds.joined(separator: " AND "))"
            var sql = SQL(declaring: (after ?? []) + (ceiling ?? []) + [offset])
            sql += """
                (SELECT \(unescaped: selectKeys), \(offset)::bigint + 1 AS walked FROM \(unescaped: table)\(filter) ORDER BY \(unescaped: ascending) OFFSET \(offset) LIMIT 1) \
                UNION ALL \
                (SELECT \(unescaped: selectKeys), (SELECT count(*) FROM \(unescaped: table)\(filter)) AS walked FROM \(unescaped: table)\(filter) ORDER BY \(unescaped: descending) LIMIT 1) LIMIT 1
                """
            return sql
        }
        upperBound = upper(after: lower, ceiling: nil)
        upperBoundFromStart = upper(after: nil, ceiling: nil)
        upperBoundBelowCeiling = upper(after: lower, ceiling: ceiling)
        upperBoundFromStartBelowCeiling = upper(after: nil, ceiling: ceiling)
        func span(ceiling: [SQL.Slot]?) -> SQL {
            let last = parameters(lower), step: SQL = "\(offset)::bigint"
            // last + B in bigint, held at its largest value (no overflow near the end of bigint).
            let reach: SQL = "(CASE WHEN \(last)::bigint > 9223372036854775806 - \(step) THEN 9223372036854775807 ELSE \(last)::bigint + \(step) + 1 END)"
            let filter = (Self.bounds(key, after: last, upTo: ceiling.map(parameters)) + ["\(unescaped: columns[0]) <= \(reach)"]).joined(separator: " AND ")
            var sql = SQL(declaring: lower + (ceiling ?? []) + [offset])
            sql += "SELECT \(unescaped: selectKeys), (\(unescaped: columns[0])::numeric - \(last)::numeric)::bigint AS walked FROM \(unescaped: table) WHERE \(filter) ORDER BY \(unescaped: descending) LIMIT 1"
            return sql
        }
        let integer = n == 1 && ["smallint", "integer", "bigint"].contains(key[0].type)
        spanBound = integer ? span(ceiling: nil) : nil
        spanBoundBelowCeiling = integer ? span(ceiling: ceiling) : nil
        sampleTemplate = "SELECT \(selectKeys) FROM \(table) TABLESAMPLE SYSTEM (%PERCENT%) ORDER BY \(ascending)"

        func statement(lower: SQL?, upper: SQL) -> (plain: SQL, change: Change?) {
            let range = Self.bounds(key, after: lower, upTo: upper).joined(separator: " AND ")
            let predicate: SQL = "\(range)" + (spec.whereClause.map { " AND (\(unescaped: $0))" } ?? "")
            let keys = columns.joined(separator: ", ")
            // Each changed row returns whether its key lies outside the range (operator SQL that
            // escaped its place), so that one pass over the changed rows counts both.
            // A physical walk's range is on ctid, which RETURNING reads from the new row version
            // (elsewhere when it moved): nothing there can escape the range, since `sql` is refused.
            // Instead each row says whether it still matches `where` (false for a delete).
            var returning: SQL = physical ? "RETURNING false AS outside, " + (spec.action.name == "update" ? "coalesce((\(unescaped: spec.whereClause ?? "true")), false)" : "false") + " AS still"
                : "RETURNING NOT (\(range)) AS outside"
            // journal: each changed row's key (text forms, as the store keeps keys) and values.
            let journalKey = "jsonb_build_array(" + columns.map { "\(table).\($0)::text" }.joined(separator: ", ") + ")"
            let change: SQL
            var before: SQL?
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
                    before = "backfill_before AS MATERIALIZED (SELECT \(unescaped: aliases), \(unescaped: Self.values(assignments.map(\.column), of: nil)) AS backfill_old "
                        + "FROM \(unescaped: table) WHERE \(predicate) FOR NO KEY UPDATE)"
                    returning += ", \(unescaped: journalKey) AS backfill_key, backfill_before.backfill_old, \(unescaped: Self.values(assignments.map(\.column), of: table)) AS backfill_new"
                    change = "UPDATE \(unescaped: table) SET \(unescaped: sets) FROM backfill_before WHERE \(unescaped: join) AND \(predicate) \(returning)"
                } else {
                    change = "UPDATE \(unescaped: table) SET \(unescaped: sets) WHERE \(predicate) \(returning)"
                }
            case .delete:
                // journal: the whole deleted row, as DELETE … RETURNING sees it.
                if spec.journal { returning += ", \(unescaped: journalKey) AS backfill_key, to_jsonb(\(unescaped: table).*) AS backfill_old, NULL::jsonb AS backfill_new" }
                change = "DELETE FROM \(unescaped: table) WHERE \(predicate) \(returning)"
            case .sql(let sql):
                return ("WITH batch AS MATERIALIZED (SELECT \(unescaped: keys) FROM \(unescaped: table) WHERE \(predicate) FOR NO KEY UPDATE) \(unescaped: sql)", nil)
            }
            let prefix: SQL = before.map { "\($0), " } ?? ""
            return ("WITH \(prefix)changed AS (\(change)) SELECT \(unescaped: Self.tally(physical: physical)) FROM changed", Change(sql: change, range: range, before: before))
        }
        let after = statement(lower: parameters(lower), upper: parameters(upperKey))
        let fromStart = statement(lower: nil, upper: parameters(upperKey))
        batch = after.plain
        batchFromStart = fromStart.plain
        change = after.change
        changeFromStart = fromStart.change
    }

    /// The counts over the changed rows, in one pass: `rows`, and `outside` (changed rows whose key
    /// lies outside the batch's range); for a physical walk also `still` (changed rows that still
    /// match `where`).
    static func tally(physical: Bool) -> String {
        "count(*) AS rows, count(*) FILTER (WHERE outside) AS outside" + (physical ? ", count(*) FILTER (WHERE still) AS still" : "")
    }

    /// For `update` and `delete` (nil for `sql`): SQL expressions, over the batch statement's
    /// `tally` of its changed rows, for how many rows it changed and how many of them lie outside
    /// its range, for a checkpoint `UPDATE` that runs in the same statement
    /// (`batch(afterKey:checkpoint:)`).
    public func counts(afterKey: Bool) -> (rows: SQL, outside: SQL, still: SQL?)? {
        guard (afterKey ? change : changeFromStart) != nil else { return nil }
        return ("(SELECT rows FROM tally)", "(SELECT outside FROM tally)", physical ? "(SELECT still FROM tally)" : nil)
    }

    /// The batch statement of `update` or `delete` with the range's checkpoint `UPDATE` as a
    /// CTE of the same statement: the data and the checkpoint move together, in one statement.
    /// The changed rows are counted once (`tally`, read by the checkpoint and the result). The
    /// checkpoint's parameters follow the batch's (lower key, upper key), renumbered.
    /// With `journal`, the store's INSERT of the changed rows into the journal (reading
    /// `changed`'s `backfill_key`, `backfill_old`, `backfill_new`) is one more CTE: the batch's
    /// journal rows commit with it, or not at all. The batch's slots are left to bind.
    public func batch(afterKey: Bool, checkpoint: SQL, journal: SQL? = nil) -> SQL {
        let plain = afterKey ? batch : batchFromStart
        guard let change = afterKey ? change : changeFromStart else { return plain }
        let before: SQL = change.before.map { "\($0), " } ?? ""
        let journaled: SQL = journal.map { ", journal AS (\($0))" } ?? ""
        return "WITH \(before)changed AS (\(change.sql)), tally AS (SELECT \(unescaped: Self.tally(physical: physical)) FROM changed), checkpoint AS (\(checkpoint))\(journaled) "
            + (physical ? "SELECT rows, outside, still FROM tally" : "SELECT rows, outside FROM tally")
    }

    /// `sql`, one of these statements, with the values of its slots: the last key walked (none
    /// for a range's first batch), the range's ceiling (none for an open end), the batch's upper
    /// key, the offset.
    public func binding(_ sql: SQL, lower: [String]? = nil, ceiling: [String]? = nil, upper: [String]? = nil, offset: Int64? = nil) -> SQL {
        var values: [SQL.Slot: PostgresValue] = [:]
        for (slots, key) in [(Slots.lower(key.count), lower), (Slots.ceiling(key.count), ceiling), (Slots.upper(key.count), upper)] {
            for (slot, value) in zip(slots, key ?? []) { values[slot] = .text(value) }
        }
        if let offset { values[Slots.offset] = .int(offset) }
        return sql.binding(values)
    }

    /// The batch statement after `lower` (from the range's start when nil) up to `upper`, bound.
    public func batch(after lower: [String]?, upTo upper: [String]) -> SQL {
        binding(lower == nil ? batchFromStart : batch, lower: lower, upper: upper)
    }

    /// The upper-bound query after `lower` (from the start when nil), below `ceiling` (open-ended
    /// when nil), `offset` keys on, bound.
    public func upperBound(after lower: [String]?, below ceiling: [String]?, offset: Int64) -> SQL {
        binding(upperBound(afterKey: lower != nil, belowCeiling: ceiling != nil), lower: lower, ceiling: ceiling, offset: offset)
    }

    /// The span query after `lower`, below `ceiling` (open-ended when nil), for an offset of
    /// `offset` keys, bound; nil when the key is not one integer column.
    public func spanBound(after lower: [String], below ceiling: [String]?, offset: Int64) -> SQL? {
        spanBound(belowCeiling: ceiling != nil).map { binding($0, lower: lower, ceiling: ceiling, offset: offset) }
    }

    /// The key of an upper-bound row, and how many keys the batch up to it walks.
    public func upperKey(_ row: PostgresRow) -> (key: [String], walked: Int) {
        (row.cells.prefix(key.count).map { $0.string ?? "" }, row["walked"].int ?? 0)
    }

    /// What a batch statement's result says it changed: rows, and rows outside the key range
    /// (0 for a `sql` action, whose statement is the operator's own).
    public func changed(by result: QueryResult) -> (rows: Int64, outside: Int64) {
        guard result.columns.starts(with: ["rows", "outside"]), let row = result.rows.first else { return (result.affectedRows, 0) }
        return (row["rows"].int64 ?? 0, row["outside"].int64 ?? 0)
    }

    /// A physical walk's page position: `(p,0)` for page p (a ctid's text form).
    public static func page(_ page: Int64) -> [String] { ["(\(page),0)"] }

    /// The page of a ctid key `(p,o)`; nil when it is not one.
    public static func page(of key: [String]?) -> Int64? {
        guard let text = key?.first, text.hasPrefix("("), let comma = text.firstIndex(of: ",") else { return nil }
        return Int64(text[text.index(after: text.startIndex)..<comma])
    }

    /// A physical walk's next batch, by arithmetic (no query): after `lower` (a ctid; the batch
    /// starts on its page, or on the next when it is `(p,0)`), `pages` pages on, held at the range's
    /// `ceiling` page; the upper key and the pages it covers. Nil when nothing is left: the lower
    /// bound is at or past the ceiling. A lower bound inside a page (`(p,o)`, after a quarantined
    /// row) ends its batch at the end of a page like any other.
    public static func pageBatch(after lower: [String]?, ceiling: [String]?, pages: Int) -> (upper: [String], pages: Int)? {
        let from = page(of: lower) ?? 0
        guard let end = page(of: ceiling), from < end else { return nil }
        let upper = min(end, from + Int64(max(pages, 1)))
        return (page(upper), Int(upper - from))
    }

    /// The upper-bound query for a range position: after a last key or from the start, below a
    /// ceiling or open-ended. Parameters in order: last key, ceiling, offset.
    public func upperBound(afterKey: Bool, belowCeiling: Bool) -> SQL {
        switch (afterKey, belowCeiling) {
        case (true, true): upperBoundBelowCeiling
        case (true, false): upperBound
        case (false, true): upperBoundFromStartBelowCeiling
        case (false, false): upperBoundFromStart
        }
    }

    /// The span query after a checkpoint (`spanBound`), below a ceiling or open-ended; nil when
    /// the key is not one integer column.
    public func spanBound(belowCeiling: Bool) -> SQL? { belowCeiling ? spanBoundBelowCeiling : spanBound }

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

    /// The key's columns, quoted: `"id"`, or a row `("tenant_id", "id")` for a composite key.
    static func tuple(_ key: [KeyColumn]) -> String {
        let columns = key.map { Identifier.quote($0.name) }
        return key.count == 1 ? columns[0] : "(" + columns.joined(separator: ", ") + ")"
    }

    /// The placeholders of `slots` cast to the key's types, shaped like `tuple`.
    static func parameters(_ key: [KeyColumn], _ slots: [SQL.Slot]) -> SQL {
        let list: [SQL] = zip(key, slots).map { column, slot in "\(slot)::\(unescaped: column.type)" }
        return key.count == 1 ? list[0] : "(\(list.joined(separator: ", ")))"
    }

    /// The bounds of a key range: `(key) > lower` and `(key) <= upper`, each when given.
    static func bounds(_ key: [KeyColumn], after lower: SQL?, upTo upper: SQL?) -> [SQL] {
        let tuple = Self.tuple(key)
        return [lower.map { "\(unescaped: tuple) > \($0)" }, upper.map { "\(unescaped: tuple) <= \($0)" }].compactMap { $0 }
    }
}
