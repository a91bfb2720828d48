import PostgresClient

/// A job checked against the live catalog, with its SQL.
public struct JobPlan: Sendable {
    public let spec: JobSpec
    public let statements: BatchStatements
    /// The table's OID, for lock and progress queries.
    public let tableOID: Int64
    /// The table's row count from catalog statistics (`reltuples`), or nil when never analyzed.
    public let estimatedRows: Int64?
    /// The table's size in pages now (from its files, not from statistics).
    public let pages: Int64
    /// The unique index that orders the key.
    public let keyIndex: String
    /// Planner settings every batch transaction applies with `SET LOCAL`, so that the batch stays
    /// a range scan of the key's index at every batch size (`enable_seqscan = off`, and for a
    /// `sql` action that would otherwise join the whole table, hash and merge joins off).
    public let batchSettings: [String]
    /// What the plan guard found at `batch.max` keys, for people: the scans, or why it could
    /// not look (an empty table).
    public let guardFinding: String
    /// A physical walk's heaps, in walk order: the table, or a partitioned table's partitions
    /// (quoted names, as its ranges name them).
    public var heaps: [String] = []
    /// A partitioned table's physical walk: each partition's statements (`UPDATE` of that
    /// partition alone), by heap.
    public var partitions: [String: BatchStatements] = [:]

    /// The statements of a range's heap (`RangeClaim.relation`): a partition's, else the table's.
    public func statements(for relation: String?) -> BatchStatements {
        relation.flatMap { partitions[$0] } ?? statements
    }
}

extension JobPlan {
    /// About 20,000 key tuples in key order from a page sample of the table (all keys of a small
    /// table): the range split's quantiles and the rehearsal's random existing keys.
    public func sampleKeys(on db: Connection) throws -> [[String]] {
        try db.query(statements.sampleKeys(percent: RangeSplitter.samplePercent(estimatedRows: estimatedRows, pages: pages)))
            .rows.map { $0.cells.map { $0.string ?? "" } }
    }

    /// The first key column's two ends as numbers (read from the key's index), when it is a
    /// number or a timestamp (its epoch); nil for other types and for an empty table.
    public func keyBounds(on db: Connection) throws -> (min: Double, max: Double)? {
        guard let sql = statements.numericKeyBounds, let row = try db.query(sql).first,
              let lo = row["lo"].double, let hi = row["hi"].double else { return nil }
        return (lo, hi)
    }
}

/// Checks a `JobSpec` against the database: the table, the columns, the key's unique index (its
/// column order, direction, collation and operator class), that every piece of operator SQL and
/// the real batch statement prepare, and that the batch statement's plan is a bounded range scan
/// of the key's index at the largest batch size (`PlanGuard`). Reads only: every check runs in a
/// `READ ONLY` transaction that is rolled back, operator SQL is only ever prepared with the
/// protocol's one-statement Parse message, and nothing is executed but catalog queries, key
/// look-ups and `EXPLAIN` without `ANALYZE`.
public enum Planner {
    public static func plan(_ spec: JobSpec, on db: Connection) throws -> JobPlan {
        func fail(_ field: String?, _ problem: String, _ fix: String) -> JobFileError {
            JobFileError(file: spec.file, field: field, problem: problem, fix: fix)
        }
        let quotedTable = Identifier.quoteQualified(spec.tableParts)
        guard let table = try db.query(
            """
            SELECT c.oid::bigint AS oid, c.relkind::text AS kind, n.nspname AS schema, c.relname AS name,
                   CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS rows, current_database() AS db,
                   c.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = c.oid) AS inherited,
                   (SELECT coalesce(sum(pg_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)::bigint
                       / current_setting('block_size')::bigint + (pg_relation_size(c.oid) / current_setting('block_size')::bigint) AS pages
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
        if table["inherited"].bool == true {
            throw fail("table", "\(qualified) has inheritance children (tables made with INHERITS); its unique index does not span them, so a key range can hold more rows than keys and a batch would change rows in the children",
                       "run one job per child table, or make the parent a partitioned table (whose unique indexes span its partitions)")
        }

        var columns: [String: (type: String, notNull: Bool)] = [:]
        for row in try db.query(
            "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
            [.int(oid)]).rows
        {
            columns[row["attname"].string!] = (row["type"].string!, row["attnotnull"].bool!)
        }
        func missing(_ field: String, _ column: String) -> JobFileError {
            let near = columns.keys.min { editDistance($0.lowercased(), column.lowercased()) < editDistance($1.lowercased(), column.lowercased()) }
            let written = { (name: String) in "`" + (Identifier.isPlainIdentifier(name) && Identifier.foldASCII(name) == name ? name : "'\(Identifier.quote(name))'") + "`" }
            return fail(field, "column `\(column)` does not exist in table \(qualified)" + (near.map { " (did you mean \(written($0))?)" } ?? ""),
                        "use one of: \(columns.keys.sorted().map(written).joined(separator: ", ")); names with capitals or spaces are written quoted, e.g. `'\"Line ID\"'`")
        }
        if spec.walk == .physical {
            return try planPhysical(spec, oid: oid, qualified: qualified, quotedTable: quotedTable, partitioned: table["kind"].string == "p",
                                    columns: Set(columns.keys), missing: missing, estimatedRows: table["rows"].int64, pages: table["pages"].int64 ?? 0, on: db)
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

        // A unique, valid, non-partial btree index whose key columns are exactly the job's key, in
        // order, ascending, with the columns' own collations and the default operator classes: the
        // only kind that serves `(key) > (last) AND (key) <= (upper)` as an index range.
        struct IndexColumn { var name: String; var descending: Bool; var collationMatches: Bool; var collation: String; var opclass: String; var defaultOpclass: Bool }
        var indexes: [String: [IndexColumn]] = [:]
        var indexOIDs: [String: Int64] = [:]
        for row in try db.query(
            """
            SELECT ic.relname AS index, ic.oid::bigint AS index_oid, k.ord, a.attname,
                   ((i.indoption::int2[])[k.ord - 1] & 1) = 1 AS descending,
                   (i.indcollation::oid[])[k.ord - 1] = a.attcollation AS collation_matches,
                   coalesce((SELECT collname FROM pg_collation WHERE oid = (i.indcollation::oid[])[k.ord - 1]), '') AS collation,
                   opc.opcname, opc.opcdefault
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_am am ON am.oid = ic.relam
            CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            JOIN pg_opclass opc ON opc.oid = (i.indclass::oid[])[k.ord - 1]
            WHERE i.indrelid = $1::oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
              AND i.indexprs IS NULL AND am.amname = 'btree' AND k.ord <= i.indnkeyatts
            ORDER BY ic.relname, k.ord
            """, [.int(oid)]).rows
        {
            let index = row["index"].string!
            indexOIDs[index] = row["index_oid"].int64
            indexes[index, default: []].append(IndexColumn(
                name: row["attname"].string!, descending: row["descending"].bool ?? false, collationMatches: row["collation_matches"].bool ?? false,
                collation: row["collation"].string ?? "", opclass: row["opcname"].string ?? "", defaultOpclass: row["opcdefault"].bool ?? false))
        }
        let sameColumns = indexes.filter { $0.value.map(\.name) == spec.key }.sorted { $0.key < $1.key }
        let create = "`CREATE UNIQUE INDEX CONCURRENTLY ON \(qualified) (\(spec.key.map(Identifier.quote).joined(separator: ", ")))`"
        guard let keyIndex = sameColumns.first(where: { $0.value.allSatisfy { !$0.descending && $0.collationMatches && $0.defaultOpclass } })?.key else {
            if let (index, columns) = sameColumns.first {
                let problems = columns.flatMap { c -> [String] in
                    (c.descending ? ["column \(c.name) is DESC"] : [])
                        + (c.collationMatches ? [] : ["column \(c.name) uses collation \"\(c.collation)\", not the column's own"])
                        + (c.defaultOpclass ? [] : ["column \(c.name) uses operator class \(c.opclass), not the type's default"])
                }
                throw fail("key", "unique index \(index) on \(qualified) (\(spec.key.joined(separator: ", "))) cannot serve the walk in key order: \(problems.joined(separator: "; "))",
                           "create an ascending unique index with the columns' own collations and default operator classes: \(create)")
            }
            let have = indexes.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value.map(\.name).joined(separator: ", ")))" }
            throw fail(
                "key", "no unique btree index on \(qualified) has exactly the key columns (\(spec.key.joined(separator: ", "))) in that order"
                    + (have.isEmpty ? "; the table has no usable unique index" : "; unique indexes: \(have.joined(separator: "; "))"),
                "set `key` to the primary key's columns, or create one: \(create)")
        }

        try checkPrivileges(spec, oid: oid, qualified: qualified, on: db)
        let statements = BatchStatements(spec: spec, key: key)
        try prove(spec: spec, statements: statements, table: quotedTable, on: db)
        // The table and its key index, and their partitions when the table is partitioned.
        let planGuard = try relations(PlanGuard(relations: [[table["schema"].string!, table["name"].string!]], indexes: [keyIndex], isSQLAction: spec.action.name == "sql"), table: oid, index: indexOIDs[keyIndex] ?? 0, on: db)
        let (settings, finding) = try guardBatch(spec: spec, statements: statements, planGuard: planGuard, on: db)
        return JobPlan(spec: spec, statements: statements, tableOID: oid, estimatedRows: table["rows"].int64, pages: table["pages"].int64 ?? 0, keyIndex: keyIndex,
                       batchSettings: settings, guardFinding: finding)
    }

    /// The plan guard with the table's partitions and their indexes (the key index's partitions)
    /// added to what it checks.
    static func relations(_ planGuard: PlanGuard, table oid: Int64, index: Int64, on db: Connection) throws -> PlanGuard {
        var planGuard = planGuard
        for row in try db.query(
            """
            SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
            FROM pg_partition_tree($1::oid) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
            UNION ALL
            SELECT n.nspname, c.relname, c.relkind::text FROM pg_partition_tree($2::oid) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
            """, [.int(oid), .int(index)]).rows
        {
            if ["r", "p"].contains(row["kind"].string ?? "") {
                planGuard.relations.insert([row["schema"].string ?? "", row["name"].string ?? ""])
            } else {
                planGuard.indexes.insert(row["name"].string ?? "")
            }
        }
        return planGuard
    }

    /// The table privileges the job needs, checked for the role that runs it: `SELECT`, and
    /// `UPDATE` of every `set` column or `DELETE`. (A `sql` action's own statement is checked by
    /// the plan guard's `EXPLAIN`, which checks every table it names.)
    static func checkPrivileges(_ spec: JobSpec, oid: Int64, qualified: String, on db: Connection) throws {
        var needed: [(privilege: String, column: String?)] = [("SELECT", nil)]
        switch spec.action {
        case .update(let assignments): needed += assignments.map { ("UPDATE", $0.column) }
        case .delete: needed.append(("DELETE", nil))
        case .sql: break
        }
        let role = try db.query("SELECT current_user AS r").first?["r"].string ?? "the role"
        for (privilege, column) in needed {
            let granted = try db.query(
                column == nil ? "SELECT has_table_privilege($1::oid, $2) AS ok" : "SELECT has_column_privilege($1::oid, $3, $2) AS ok",
                [.int(oid), .text(privilege)] + (column.map { [.text($0)] } ?? [])).first?["ok"].bool ?? false
            guard granted else {
                let what = column.map { "\(privilege) on column \($0) of \(qualified)" } ?? "\(privilege) on \(qualified)"
                throw JobFileError(
                    file: spec.file, field: column.map { "set.\($0)" } ?? (privilege == "DELETE" ? "action" : "table"),
                    problem: "role \(role) lacks \(what)",
                    fix: "grant it: `GRANT \(privilege)\(column.map { " (\(Identifier.quote($0)))" } ?? "") ON \(qualified) TO \(Identifier.quote(role))`")
            }
        }
    }

    /// EXPLAINs the batch statement at `batch.max` keys from the first key, under the batch's
    /// settings, and returns the settings that keep it a bounded range scan of the key's index
    /// with what the guard found; throws when no setting does.
    private static func guardBatch(spec: JobSpec, statements: BatchStatements, planGuard: PlanGuard, on db: Connection) throws -> ([String], String) {
        var settings = ["enable_seqscan = off"]
        guard let first = try db.query(statements.upperBound(after: nil, below: nil, offset: 0)).first.map({ statements.upperKey($0).key }) else {
            return (settings, "not checked: the table is empty (it is checked again at the next run)")
        }
        let upper = try db.query(statements.upperBound(after: first, below: nil, offset: Int64(spec.batch.max - 1))).first
            .map { statements.upperKey($0).key } ?? first
        func explain() throws -> PlanGuard.Finding {
            do {
                let json = try inReadOnlyTransaction(settings: settings, on: db) {
                    try db.query("EXPLAIN (FORMAT JSON, VERBOSE) \(statements.batch(after: first, upTo: upper))" as SQL).rows.first?[0].string ?? ""
                }
                return planGuard.check(explainJSON: json)
            } catch let error as PostgresError where error.code == "42501" {
                throw JobFileError(file: spec.file, field: spec.action.name == "sql" ? "sql" : nil,
                                   problem: "the batch statement is refused: \(error.message)",
                                   fix: "grant the role what the statement needs on that table (`GRANT … ON … TO …`)")
            }
        }
        var finding = try explain()
        if case .joinsWholeTable = finding {
            settings += ["enable_hashjoin = off", "enable_mergejoin = off"]
            finding = try explain()
        }
        switch finding {
        case .bounded(let scans):
            return (settings, "\(scans) at batch.max = \(spec.batch.max) keys")
        case .unbounded(let problem), .joinsWholeTable(let problem):
            throw JobFileError(
                file: spec.file, field: spec.action.name == "sql" ? "sql" : "where",
                problem: "the batch statement is not a bounded range scan of the key's index at batch.max = \(spec.batch.max) keys (plan guard): \(problem)",
                fix: "keep `where` and `set` to conditions on the row itself (a top-level OR is fine inside its parentheses), make sure the key's index is usable, or lower `batch.max`; `backfill plan` shows the plan")
        }
    }

    /// Runs `body` inside a READ COMMITTED, READ ONLY transaction with the given `SET LOCAL`
    /// settings, then rolls back.
    static func inReadOnlyTransaction<T>(settings: [String] = [], on db: Connection, _ body: () throws -> T) throws -> T {
        try db.begin(SessionPins.readOnly)
        defer { try? db.execute("ROLLBACK") }
        if !settings.isEmpty { try db.execute(settings.map { "SET LOCAL \($0)" }.joined(separator: "; ")) }
        return try body()
    }

    /// Prepares each piece of operator SQL on its own, then the real statements, with the
    /// protocol's Parse message (`PQprepare`), which takes exactly one statement, so that text
    /// that tries to end the statement early is a syntax error, and a typo is reported against
    /// its field. Nothing is executed; the statements are deallocated at once.
    static func prove(spec: JobSpec, statements: BatchStatements, table: String, on db: Connection) throws {
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
        checks += [(whole, statements.batch.text), (whole, statements.batchFromStart.text), ("key", statements.upperBound.text), ("key", statements.upperBoundFromStart.text)]
        try inReadOnlyTransaction(on: db) {
            for check in checks {
                do {
                    try db.prepare("backfill_check", check.sql)
                    try db.deallocate("backfill_check")
                } catch let error as PostgresError where !error.isConnectionLost {
                    throw JobFileError(
                        file: spec.file, field: check.field,
                        problem: "does not prepare against \(table): \(error.message)" + (error.hint.map { " (hint: \($0))" } ?? ""),
                        fix: "correct the SQL of `\(check.field)`; the statement tried was:\n    \(check.sql)")
                }
            }
        }
    }
}
