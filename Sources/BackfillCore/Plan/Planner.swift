import PostgresClient

/// A job checked against the live catalog, with its SQL.
public struct JobPlan: Sendable {
    public let spec: JobSpec
    public let statements: BatchStatements
    /// The table's OID, for lock and progress queries.
    public let tableOID: Int64
    /// The table's row count from catalog statistics (`reltuples`), or nil when never analyzed.
    public let estimatedRows: Int64?
    /// The unique index that orders the key.
    public let keyIndex: String
}

extension JobPlan {
    /// About 20,000 key tuples in key order from a page sample of the table (all keys of a small
    /// table): the range split's quantiles and the rehearsal's random existing keys.
    public func sampleKeys(on db: Connection) throws -> [[String]] {
        try db.query(statements.sampleKeys(percent: RangeSplitter.samplePercent(estimatedRows: estimatedRows)))
            .rows.map { $0.cells.map { $0.string ?? "" } }
    }
}

/// Checks a `JobSpec` against the database: the table, the columns, the key's unique index, and
/// that the real batch statement prepares. Reads only; every check runs in a transaction that is
/// rolled back.
public enum Planner {
    public static func plan(_ spec: JobSpec, on db: Connection) throws -> JobPlan {
        func fail(_ field: String?, _ problem: String, _ fix: String) -> JobFileError {
            JobFileError(file: spec.file, field: field, problem: problem, fix: fix)
        }
        let quotedTable = Identifier.quoteQualified(spec.tableParts)
        guard let table = try db.query(
            """
            SELECT c.oid::bigint AS oid, c.relkind::text AS kind, n.nspname AS schema, c.relname AS name,
                   CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS rows, current_database() AS db
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = to_regclass($1)
            """, [.text(quotedTable)]).first
        else {
            let db = try db.query("SELECT current_database() AS db, current_setting('search_path') AS path").first
            throw fail(
                "table", "table `\(spec.table)` does not exist in database `\(db?["db"].string ?? "?")` (search_path: \(db?["path"].string ?? "?"))",
                "check the name and the schema; names with capitals need quotes: `table: '\"Accounts\"'`")
        }
        guard ["r", "p"].contains(table["kind"].string ?? "") else {
            throw fail("table", "`\(spec.table)` is not a table (relkind \(table["kind"].string ?? "?"))", "name a table; views and foreign tables cannot be backfilled in key order")
        }
        let oid = table["oid"].int64!
        let qualified = "\(table["schema"].string!).\(table["name"].string!)"

        var columns: [String: (type: String, notNull: Bool)] = [:]
        for row in try db.query(
            "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
            [.int(oid)]).rows
        {
            columns[row["attname"].string!] = (row["type"].string!, row["attnotnull"].bool!)
        }
        func missing(_ field: String, _ column: String) -> JobFileError {
            let near = columns.keys.min { editDistance($0, column) < editDistance($1, column) }
            return fail(field, "column `\(column)` does not exist in table \(qualified)" + (near.map { " (did you mean `\($0)`?)" } ?? ""),
                        "use one of: \(columns.keys.sorted().joined(separator: ", "))")
        }
        var key: [KeyColumn] = []
        for name in spec.key {
            guard let column = columns[name] else { throw missing("key", name) }
            guard column.notNull else {
                throw fail("key", "key column `\(name)` of \(qualified) can be NULL; keyset batches would skip NULL keys", "choose NOT NULL columns (the primary key), or `ALTER TABLE … ALTER COLUMN \(name) SET NOT NULL`")
            }
            key.append(KeyColumn(name: name, type: column.type))
        }
        if case .update(let assignments) = spec.action {
            for assignment in assignments {
                guard columns[assignment.column] != nil else { throw missing("set.\(assignment.column)", assignment.column) }
                guard !spec.key.contains(assignment.column) else {
                    throw fail("set.\(assignment.column)", "`set` changes key column `\(assignment.column)`; the walk over the key would lose its place", "fill a non-key column, or use `sql` with a statement that moves rows deliberately")
                }
            }
        }

        // A unique, valid, non-partial btree index whose key columns are exactly the job's key, in order.
        var indexes: [String: [String]] = [:]
        for row in try db.query(
            """
            SELECT ic.relname AS index, k.ord, a.attname
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_am am ON am.oid = ic.relam
            CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = $1::oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
              AND i.indexprs IS NULL AND am.amname = 'btree' AND k.ord <= i.indnkeyatts
            ORDER BY ic.relname, k.ord
            """, [.int(oid)]).rows
        {
            indexes[row["index"].string!, default: []].append(row["attname"].string!)
        }
        guard let keyIndex = indexes.first(where: { $0.value == spec.key })?.key else {
            let have = indexes.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value.joined(separator: ", ")))" }
            throw fail(
                "key", "no unique btree index on \(qualified) has exactly the key columns (\(spec.key.joined(separator: ", "))) in that order"
                    + (have.isEmpty ? "; the table has no usable unique index" : "; unique indexes: \(have.joined(separator: "; "))"),
                "set `key` to the primary key's columns, or create one: `CREATE UNIQUE INDEX CONCURRENTLY ON \(qualified) (\(spec.key.joined(separator: ", ")))`")
        }

        let statements = BatchStatements(spec: spec, key: key)
        try prove(spec: spec, statements: statements, table: quotedTable, on: db)
        return JobPlan(spec: spec, statements: statements, tableOID: oid, estimatedRows: table["rows"].int64, keyIndex: keyIndex)
    }

    /// Prepares each piece of operator SQL, then the real statements, inside a transaction that is
    /// rolled back, so that a typo is reported against its field before any row changes.
    private static func prove(spec: JobSpec, statements: BatchStatements, table: String, on db: Connection) throws {
        var checks: [(field: String, sql: String)] = []
        if let whereClause = spec.whereClause {
            checks.append(("where", "SELECT 1 FROM \(table) WHERE (\(whereClause))"))
        }
        if case .update(let assignments) = spec.action {
            for a in assignments {
                checks.append(("set.\(a.column)", "UPDATE \(table) SET \(Identifier.quote(a.column)) = (\(a.expression)) WHERE false"))
            }
        }
        if let check = spec.throttle.checkSQL { checks.append(("throttle.check_sql", "SELECT (\(check))::boolean")) }
        let whole: String = switch spec.action { case .sql: "sql"; case .delete: "action"; case .update: "set" }
        checks += [(whole, statements.batch), (whole, statements.batchFromStart), ("key", statements.upperBound), ("key", statements.upperBoundFromStart)]
        try db.execute("BEGIN")
        defer {
            try? db.execute("ROLLBACK")
            try? db.execute("DEALLOCATE ALL")
        }
        for (i, check) in checks.enumerated() {
            try db.execute("SAVEPOINT backfill_check")
            do {
                try db.execute("PREPARE backfill_check_\(i) AS \(check.sql)")
            } catch let error as PostgresError where !error.isConnectionLost {
                throw JobFileError(
                    file: spec.file, field: check.field,
                    problem: "does not prepare against \(table): \(error.message)" + (error.hint.map { " (hint: \($0))" } ?? ""),
                    fix: "correct the SQL of `\(check.field)`; the statement tried was:\n    \(check.sql)")
            }
            try db.execute("RELEASE SAVEPOINT backfill_check")
        }
    }
}
