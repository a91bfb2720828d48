import PostgresClient

/// What a worker's batches cost the server, for events and metrics: the WAL written while each
/// batch ran (the WAL insert position read by the batch's claim and again just before its
/// `COMMIT`, in the round trips the batch makes anyway: on a busy server it includes other
/// sessions' WAL of that moment), and the share of the table's updates during the run that were
/// HOT (`pg_stat_user_tables`' counters, read by the same statement): a low share means an index on a
/// filled column makes every update write every index.
struct WriteCost {
    let tableOID: Int64
    /// WAL bytes of the last committed batch.
    private(set) var walBytes: Int64?
    private var baseline: (hot: Int64, updates: Int64)?
    /// HOT updates / updates on the table since the worker's first batch; nil before any update.
    private(set) var hotShare: Double?

    /// The statement a batch sends just before its `COMMIT`, in the same pipeline: the WAL
    /// position and the table's update counters.
    let reading: Connection.Statement

    init(tableOID: Int64) {
        self.tableOID = tableOID
        reading = Connection.Statement(
            """
            SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn,
                   pg_stat_get_tuples_hot_updated($1::oid) AS hot, pg_stat_get_tuples_updated($1::oid) AS upd
            """, [.int(tableOID)], prepared: true)
    }

    /// Takes a committed batch's readings: the WAL position its claim read, and the result of
    /// `reading`. A reading that is missing leaves the figure out; it never fails the batch.
    mutating func record(walBefore: Int64?, reading result: QueryResult?) {
        let row = result?.rows.first
        walBytes = zip(walBefore, row?["lsn"].int64).map { max($1 - $0, 0) }
        guard let hot = row?["hot"].int64, let updates = row?["upd"].int64 else { return }
        guard let baseline else { self.baseline = (hot, updates); return }
        hotShare = Self.share(hot: hot - baseline.hot, updates: updates - baseline.updates)
    }

    /// HOT updates over updates, nil when nothing was updated.
    static func share(hot: Int64, updates: Int64) -> Double? {
        updates > 0 ? min(max(Double(hot) / Double(updates), 0), 1) : nil
    }
}

private func zip(_ a: Int64?, _ b: Int64?) -> (Int64, Int64)? {
    guard let a, let b else { return nil }
    return (a, b)
}
