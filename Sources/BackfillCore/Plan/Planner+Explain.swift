import PostgresClient

extension Planner {
    /// `EXPLAIN` of one real batch of `size` keys, starting after the `skip`-th key (0: the first
    /// batch). Reads only. Nil when the table has no keys there.
    public static func explain(_ plan: JobPlan, size: Int, skip: Int = 0, analyze: Bool = false, on db: Connection) throws -> String? {
        let statements = plan.statements
        var lower: [String]?
        let upper: [String]
        if statements.physical {
            // Pages: `skip` pages in, `size` pages long.
            lower = BatchStatements.page(Int64(skip))
            upper = BatchStatements.page(Int64(skip + size))
        } else {
            if skip > 0 {
                guard let row = try db.query(statements.upperBound(after: nil, below: nil, offset: Int64(skip - 1))).first else { return nil }
                lower = statements.upperKey(row).key
            }
            guard let upperRow = try db.query(statements.upperBound(after: lower, below: nil, offset: Int64(size - 1))).first else { return nil }
            upper = statements.upperKey(upperRow).key
        }
        let batch = statements.batch(after: lower, upTo: upper)
        let prefix = analyze ? "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)" : "EXPLAIN"
        // EXPLAIN ANALYZE runs the batch: always inside a transaction that is rolled back, and
        // read-only unless asked to analyze.
        try db.begin(analyze ? "ISOLATION LEVEL READ COMMITTED" : SessionPins.readOnly)
        defer { try? db.execute("ROLLBACK") }
        try db.execute(plan.batchSettings.map { "SET LOCAL \($0)" }.joined(separator: "; "))
        return try db.query("\(unescaped: prefix) \(batch)" as SQL).rows.compactMap { $0[0].string }.joined(separator: "\n")
    }

    /// How many rows match `where` now (all rows when the job has none). A full count: it reads
    /// the table but takes no lock that blocks writers; on PostgreSQL 14+ in chunks of pages,
    /// each under the job's `timeouts.statement_ms` (`ChunkedCount`).
    public static func countMatching(_ spec: JobSpec, on db: Connection) throws -> Int64 {
        let table = Identifier.quoteQualified(spec.tableParts)
        let chunks = ChunkedCount(table: table, statementMs: spec.timeouts.statementMs, db: db)
        if chunks.byPages {
            let sql: SQL = "SELECT count(*) AS n FROM \(unescaped: table) WHERE \(BatchStatements.pageRange)" + (spec.whereClause.map { " AND (\(unescaped: $0))" } ?? "")
            return try chunks.overPages(sql, limit: nil)
        }
        let filter = spec.whereClause.map { " WHERE (\($0))" } ?? ""
        return try inReadOnlyTransaction(settings: ["statement_timeout = 0"], on: db) {
            try db.query("SELECT count(*) AS n FROM \(table)\(filter)").first?["n"].int64 ?? 0
        }
    }
}
