import PostgresClient

extension BatchStatements {
    /// One revert batch (`backfill revert`), one statement: the next journal rows below a journal
    /// `seq` (`Slots.lastSeq`, NULL for the newest), newest first, at most `Slots.limit`; each row
    /// gets its old values back only when its current values are still the ones the job wrote
    /// (`IS NOT DISTINCT FROM`, per column, checked again on a row's newest version by the UPDATE
    /// itself), a deleted row is inserted again unless its key (or another unique value) is taken;
    /// the journal rows left are recorded as conflicts, and the revert's checkpoint moves in the
    /// same statement, only while the revert's lease row carries its token (`Slots.token`).
    /// Parameters: job, last seq, limit, lease token. Columns `rows`, `restored`, `conflicts`,
    /// `last` (the batch's lowest seq, NULL when the journal is walked), `leased`. `columns` are
    /// the table's columns a deleted row is inserted with (not generated ones). A batch holds each
    /// key once: it ends before the first journal row whose key a newer row of the batch has (a
    /// `repeat` job's key journaled in two passes), so that the newer one is put back first, by
    /// its own batch.
    public func revert(action: JobSpec.Action, tables: RevertTables, columns: [String]) -> SQL {
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
        let job = Slots.job, last = Slots.lastSeq, limit = Slots.limit, token = Slots.token
        var sql = SQL(declaring: [job, last, limit, token])
        sql += """
            WITH candidates AS MATERIALIZED (SELECT j.seq, j.pass, j.key, j.old, j.new FROM \(unescaped: tables.journal) j WHERE j.job = \(job) AND (\(last)::bigint IS NULL OR j.seq < \(last)::bigint) ORDER BY j.seq DESC LIMIT \(limit)), \
            batch AS MATERIALIZED (SELECT * FROM candidates WHERE seq > (SELECT coalesce(max(c.seq), -1) FROM candidates c WHERE EXISTS (SELECT 1 FROM candidates d WHERE d.key = c.key AND d.seq > c.seq))), \
            r AS MATERIALIZED (SELECT seq, key, \(unescaped: record("old")) AS o, \(unescaped: record("new")) AS n FROM batch), \
            restored AS (\(unescaped: restore)), \
            conflicts AS (INSERT INTO \(unescaped: tables.conflicts) (job, pass, key) SELECT \(job), b.pass, b.key FROM batch b WHERE NOT EXISTS (SELECT 1 FROM restored x WHERE x.key = b.key) \
            ON CONFLICT (job, pass, key) DO UPDATE SET detected_at = now() RETURNING 1), \
            checkpoint AS (UPDATE \(unescaped: tables.jobs) SET revert_last = coalesce((SELECT min(seq) FROM batch), revert_last), \
            revert_restored = revert_restored + (SELECT count(*) FROM restored), revert_conflicts = revert_conflicts + (SELECT count(*) FROM conflicts), updated_at = now() \
            WHERE name = \(job) AND EXISTS (SELECT 1 FROM \(unescaped: tables.leases) l WHERE l.job = \(job) AND l.token = \(token)) RETURNING 1) \
            SELECT (SELECT count(*) FROM batch) AS rows, (SELECT count(*) FROM restored) AS restored, (SELECT count(*) FROM conflicts) AS conflicts, \
            (SELECT min(seq) FROM batch) AS last, EXISTS (SELECT 1 FROM checkpoint) AS leased
            """
        return sql
    }
}
