import PostgresClient

/// What a worker's batches cost the server, for events and metrics: the WAL written while each
/// batch ran (`pg_current_wal_insert_lsn()` read before and after it on the worker's connection,
/// outside the transaction: on a busy server it includes other sessions' WAL of that moment), and
/// the share of the table's updates during the run that were HOT (`pg_stat_user_tables`): a low
/// share means an index on a filled column makes every update write every index.
struct WriteCost {
    let tableOID: Int64
    /// Seconds between readings of the table's statistics.
    let statsInterval: Double
    private var walBefore: Int64?
    /// WAL bytes of the last committed batch.
    private(set) var walBytes: Int64?
    private var baseline: (hot: Int64, updates: Int64)?
    private var lastStats = -Double.infinity
    /// HOT updates / updates on the table since the worker's first batch; nil before any update.
    private(set) var hotShare: Double?

    init(tableOID: Int64, statsInterval: Double = 2) {
        self.tableOID = tableOID
        self.statsInterval = statsInterval
    }

    /// Reads the WAL position before a batch.
    mutating func beforeBatch(_ db: Connection) {
        walBefore = Self.walPosition(db)
    }

    /// Reads the WAL position after a committed batch and, every `statsInterval`, the table's
    /// update counters. A reading that fails leaves the figure out; it never fails the batch.
    mutating func afterBatch(_ db: Connection, at now: Double) {
        walBytes = zip(walBefore, Self.walPosition(db)).map { max($1 - $0, 0) }
        guard now - lastStats >= statsInterval else { return }
        lastStats = now
        guard let row = try? db.query(
            "SELECT n_tup_hot_upd AS hot, n_tup_upd AS upd FROM pg_stat_user_tables WHERE relid = $1::oid", [.int(tableOID)]).first,
            let hot = row["hot"].int64, let updates = row["upd"].int64
        else { return }
        guard let baseline else { self.baseline = (hot, updates); return }
        hotShare = Self.share(hot: hot - baseline.hot, updates: updates - baseline.updates)
    }

    /// The fields a batch event carries: `wal_bytes`, and `hot_update_ratio` once known.
    var fields: [(String, RunEvent.Value)] {
        (walBytes.map { [("wal_bytes", RunEvent.Value.int($0))] } ?? []) + (hotShare.map { [("hot_update_ratio", RunEvent.Value.double($0))] } ?? [])
    }

    /// HOT updates over updates, nil when nothing was updated.
    static func share(hot: Int64, updates: Int64) -> Double? {
        updates > 0 ? min(max(Double(hot) / Double(updates), 0), 1) : nil
    }

    private static func walPosition(_ db: Connection) -> Int64? {
        (try? db.query("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn"))?.first?["lsn"].int64
    }
}

private func zip(_ a: Int64?, _ b: Int64?) -> (Int64, Int64)? {
    guard let a, let b else { return nil }
    return (a, b)
}
