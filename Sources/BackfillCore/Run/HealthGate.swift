import PostgresClient

/// The throttles checked between batches, never while a batch holds locks: replica lag,
/// autovacuum on the table, and the operator's `check_sql`. Checked at most once per `interval`
/// while healthy, so that a server with no replicas pays one cheap query a second.
struct HealthGate {
    /// Why the job should wait now.
    enum Reason: String, Sendable {
        case replicationLag = "replication_lag"
        case checkSQL = "check_sql"
        case autovacuum
    }

    let throttle: JobSpec.Throttle
    let tableOID: Int64
    let interval: Double
    /// `statement_timeout` of every health check (`check_sql` included).
    let checkTimeoutMs: Int
    private var lastCheck = -Double.infinity

    init(throttle: JobSpec.Throttle, tableOID: Int64, interval: Double = 1, checkTimeoutMs: Int = 5000) {
        self.throttle = throttle
        self.tableOID = tableOID
        self.interval = interval
        self.checkTimeoutMs = checkTimeoutMs
    }

    /// Whether a check is due at `now` (seconds since the run started).
    func isDue(at now: Double) -> Bool { now - lastCheck >= interval }

    /// Reads the signals and returns the first reason to wait, with a detail for people.
    mutating func check(at now: Double, db: Connection) throws -> (Reason, String)? {
        lastCheck = now
        if throttle.maxReplicationLagMs > 0 || throttle.pauseDuringAutovacuum {
            let row = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) { try db.query(
                """
                SELECT (SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000), 0)::float8 FROM pg_stat_replication) AS lag_ms,
                       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = $1::oid) AS vacuuming
                """, [.int(tableOID)]).first }
            let lag = row?["lag_ms"].double ?? 0
            if throttle.maxReplicationLagMs > 0, lag > Double(throttle.maxReplicationLagMs) {
                return (.replicationLag, "replica replay lag \(Int(lag)) ms > \(throttle.maxReplicationLagMs) ms")
            }
            if throttle.pauseDuringAutovacuum, row?["vacuuming"].bool == true {
                return (.autovacuum, "a vacuum is working on the table")
            }
        }
        if let sql = throttle.checkSQL {
            // Read-only and time-boxed: the operator's check may read anything but change nothing.
            let ok = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) {
                try db.query("SELECT (\(sql))::boolean AS ok").first?["ok"].bool
            }
            if ok != true { return (.checkSQL, "check_sql returned \(ok.map(String.init) ?? "NULL")") }
        }
        return nil
    }
}
