import PostgresClient

/// The checks of a `walk: physical` job (docs/physical-walk.md): the walk needs TID Range Scans
/// (PostgreSQL 14+) over a heap, a change that the `where` rule can hold it to, and a plan that
/// is a TID Range Scan with both bounds in every batch.
extension Planner {
    /// The planner settings every physical batch transaction pins: the batch must read its pages,
    /// never the rows an index points to (an indexed, selective `where` makes the planner prefer
    /// the index), whatever the role's or the database's defaults (`enable_tidscan = off`). They
    /// choose how rows are found, never how indexes are kept. The store's statements in the same
    /// transaction then cost as disabled plans do (10^10), far above `jit_above_cost`: without
    /// `jit = off`, every one of them was JIT-compiled, 146 ms of a 0.4 ms claim (EXPLAIN ANALYZE,
    /// PostgreSQL 15).
    static let pageBatchSettings = ["enable_tidscan = on", "enable_seqscan = off", "enable_indexscan = off", "enable_indexonlyscan = off", "enable_bitmapscan = off", "jit = off"]

    static func planPhysical(_ spec: JobSpec, oid: Int64, qualified: String, quotedTable: String, partitioned: Bool, columns: Set<String>,
                             missing: (String, String) -> JobFileError, estimatedRows: Int64?, pages: Int64, on db: Connection) throws -> JobPlan {
        func fail(_ field: String?, _ problem: String, _ fix: String) -> JobFileError {
            JobFileError(file: spec.file, field: field, problem: problem, fix: fix)
        }
        guard db.serverVersion >= 140_000 else {
            throw fail("walk", "`walk: physical` needs PostgreSQL 14 or later (TID Range Scans); this server is \(db.serverVersion / 10000).\(db.serverVersion % 10000)",
                       "walk the table by a unique key (`key: [...]`), or upgrade the server")
        }
        // The heaps in walk order: the table, or its partitions in partition-tree order. Each must
        // be a heap: other access methods have no TID Range Scan, or no stable ctid.
        let heaps = try db.query(
            """
            SELECT n.nspname AS schema, c.relname AS name, coalesce(am.amname, '') AS am
            FROM (SELECT $1::oid AS relid, 0::bigint AS ord WHERE NOT $2 UNION ALL SELECT t.relid, t.ord FROM pg_partition_tree($1::oid) WITH ORDINALITY t(relid, parentrelid, isleaf, level, ord) WHERE $2 AND t.isleaf) h
            JOIN pg_class c ON c.oid = h.relid JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam
            WHERE c.relkind = 'r' ORDER BY h.ord
            """, [.int(oid), .bool(partitioned)]).rows
        if let other = heaps.first(where: { $0["am"].string != "heap" }) {
            throw fail("walk", "\(other["schema"].string ?? "").\(other["name"].string ?? qualified) uses table access method `\(other["am"].string ?? "?")`, not heap: `walk: physical` reads heap pages by ctid",
                       "walk the table by a unique key (`key: [...]`)")
        }
        let partitionKey = Set(try db.query(
            "SELECT a.attname FROM pg_partitioned_table p CROSS JOIN LATERAL unnest(p.partattrs::int2[]) k(attnum) JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum WHERE p.partrelid = $1::oid",
            [.int(oid)]).rows.compactMap { $0["attname"].string })
        if case .update(let assignments) = spec.action {
            for assignment in assignments {
                guard columns.contains(assignment.column) else { throw missing("set.\(assignment.column)", assignment.column) }
                guard !partitionKey.contains(assignment.column) else {
                    throw fail("set.\(assignment.column)", "`set` changes `\(assignment.column)`, part of the partition key of \(qualified): the change would move rows between partitions, behind or ahead of the walk",
                               "fill a column outside the partition key")
                }
            }
        }
        if partitioned, spec.onError.action == .skip {
            throw fail("on_error", "`on_error: {action: skip}` cannot name a bad row of a partitioned table in a physical walk: a bad row is recorded by its ctid, a place within one partition, while the end check reads every partition and would pass over the rows at that ctid in the others",
                       "remove `on_error.action: skip` (the job then stops at a bad row and names it), or walk the table by a unique key")
        }
        try checkReplicaIdentity(spec, oid: oid, qualified: qualified, on: db)
        try checkPrivileges(spec, oid: oid, qualified: qualified, on: db)
        let key = [KeyColumn(name: JobSpec.physicalKey, type: "tid")]
        let statements = BatchStatements(spec: spec, key: key)
        try prove(spec: spec, statements: statements, table: quotedTable, on: db)
        let planGuard = try relations(PlanGuard(relations: [Identifier.parseQualified(qualified) ?? [qualified]], indexes: [], isSQLAction: false, physical: true),
                                      table: oid, index: 0, on: db)
        // A partitioned table is walked partition after partition: a ctid is a place in one
        // partition, and a batch through the parent would read its pages in every partition.
        var partitions: [String: BatchStatements] = [:]
        var walked: [String] = []
        for heap in heaps {
            let parts = [heap["schema"].string ?? "", heap["name"].string ?? ""]
            var leaf = spec
            leaf.tableParts = parts
            let leafStatements = partitioned ? BatchStatements(spec: leaf, key: key) : statements
            walked.append(leafStatements.table)
            if partitioned { partitions[leafStatements.table] = leafStatements }
        }
        let findings = try (partitioned ? walked.compactMap { partitions[$0] } : [statements]).map {
            try guardPageBatch(spec: spec, statements: $0, planGuard: planGuard, on: db)
        }
        var plan = JobPlan(spec: spec, statements: statements, tableOID: oid, estimatedRows: estimatedRows, pages: pages, keyIndex: "none (walk: physical, heap pages by ctid)",
                           batchSettings: pageBatchSettings, guardFinding: findings.joined(separator: "; "))
        (plan.heaps, plan.partitions) = (walked, partitions)
        return plan
    }

    /// A table that a publication publishes updates or deletes of needs a replica identity, or
    /// every batch fails (`55000 cannot update table … because it does not have a replica
    /// identity`). A table with no usable key, the physical walk's own kind, is the one that
    /// lacks it.
    private static func checkReplicaIdentity(_ spec: JobSpec, oid: Int64, qualified: String, on db: Connection) throws {
        guard let row = try db.query(
            """
            SELECT string_agg(DISTINCT p.pubname, ', ') AS publications
            FROM pg_class c, pg_publication p
            WHERE c.oid = $1::oid AND (CASE WHEN $2 THEN p.pubupdate ELSE p.pubdelete END)
              AND (p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname AND format('%I.%I', t.schemaname, t.tablename)::regclass IN (SELECT $1::oid UNION ALL SELECT relid FROM pg_partition_tree($1::oid))))
              AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                   OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
            """, [.int(oid), .bool(spec.action.name == "update")]).first,
            let publications = row["publications"].string
        else { return }
        throw JobFileError(
            file: spec.file, field: "walk",
            problem: "\(qualified) is published (\(publications)) without a replica identity: PostgreSQL refuses every \(spec.action.name == "update" ? "UPDATE" : "DELETE") of it",
            fix: "give it one: `ALTER TABLE \(qualified) REPLICA IDENTITY FULL` (logs whole old rows), or a primary key")
    }

    /// EXPLAINs a batch of `batch.max_pages` pages under the pinned settings: it must be a TID
    /// Range Scan with both bounds on the table and on each partition.
    static func guardPageBatch(spec: JobSpec, statements: BatchStatements, planGuard: PlanGuard, on db: Connection) throws -> String {
        let json: String
        do {
            json = try inReadOnlyTransaction(settings: pageBatchSettings, on: db) {
                try db.query("EXPLAIN (FORMAT JSON, VERBOSE) \(statements.batch(after: BatchStatements.page(0), upTo: BatchStatements.page(Int64(spec.batch.max))))" as SQL)
                    .rows.first?[0].string ?? ""
            }
        } catch let error as PostgresError where error.code == "42501" {
            // A partition's batch needs the privileges on the partition itself.
            throw JobFileError(file: spec.file, field: "table", problem: "the batch statement on \(statements.table) is refused: \(error.message)",
                               fix: "grant the role what the job needs on that table (`GRANT SELECT, UPDATE ON \(statements.table) TO …`, or DELETE for a purge)")
        }
        switch planGuard.check(explainJSON: json) {
        case .bounded(let scans):
            return "\(scans) at batch.max_pages = \(spec.batch.max) pages"
        case .unbounded(let problem), .joinsWholeTable(let problem):
            throw JobFileError(
                file: spec.file, field: "where",
                problem: "the batch statement is not a TID Range Scan of its pages at batch.max_pages = \(spec.batch.max) (plan guard): \(problem)",
                fix: "keep `where` and `set` to conditions on the row itself; `backfill plan` shows the plan")
        }
    }
}
