import PostgresClient

extension Planner {
    /// `EXPLAIN` of one real batch of `size` keys, starting after the `skip`-th key (0: the first
    /// batch). Reads only. Nil when the table has no keys there.
    public static func explain(_ plan: JobPlan, size: Int, skip: Int = 0, analyze: Bool = false, on db: Connection) throws -> String? {
        let statements = plan.statements
        var lower: [PostgresValue]?
        if skip > 0 {
            guard let row = try db.query(statements.upperBoundFromStart, [.int(Int64(skip - 1))]).first else { return nil }
            lower = statements.upperKey(row).key.map(PostgresValue.text)
        }
        let upperRow = try db.query(
            lower == nil ? statements.upperBoundFromStart : statements.upperBound,
            (lower ?? []) + [.int(Int64(size - 1))]).first
        guard let upperRow else { return nil }
        let upper = statements.upperKey(upperRow).key.map(PostgresValue.text)
        let sql = (lower == nil ? statements.batchFromStart : statements.batch)
        let prefix = analyze ? "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)" : "EXPLAIN"
        // EXPLAIN ANALYZE runs the batch: always inside a transaction that is rolled back, and
        // read-only unless asked to analyze.
        try db.begin(analyze ? "ISOLATION LEVEL READ COMMITTED" : SessionPins.readOnly)
        defer { try? db.execute("ROLLBACK") }
        try db.execute(plan.batchSettings.map { "SET LOCAL \($0)" }.joined(separator: "; "))
        return try db.query("\(prefix) \(sql)", (lower ?? []) + upper).rows.compactMap { $0[0].string }.joined(separator: "\n")
    }

    /// How many rows match `where` now (all rows when the job has none). A full count: it reads
    /// the table but takes no lock that blocks writers; on PostgreSQL 14+ in chunks of pages,
    /// each under the job's `timeouts.statement_ms` (`ChunkedCount`).
    public static func countMatching(_ spec: JobSpec, on db: Connection) throws -> Int64 {
        let table = Identifier.quoteQualified(spec.tableParts)
        let chunks = ChunkedCount(table: table, statementMs: spec.timeouts.statementMs, db: db)
        if chunks.byPages {
            let sql = "SELECT count(*) AS n FROM \(table) WHERE \(BatchStatements.pageRange(from: 1))" + (spec.whereClause.map { " AND (\($0))" } ?? "")
            return try chunks.overPages(sql, [], limit: nil)
        }
        let filter = spec.whereClause.map { " WHERE (\($0))" } ?? ""
        return try inReadOnlyTransaction(settings: ["statement_timeout = 0"], on: db) {
            try db.query("SELECT count(*) AS n FROM \(table)\(filter)").first?["n"].int64 ?? 0
        }
    }
}
