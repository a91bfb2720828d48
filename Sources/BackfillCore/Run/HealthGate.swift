import PostgresClient

/// The throttles checked between batches, never while a batch holds locks: replica lag, logical
/// replication slots, WAL archiving, the job's WAL budget, autovacuum on the table, and the
/// operator's `check_sql`. The slow signals are read at most once per `interval` while healthy,
/// so that a server with no replicas pays one cheap query a second; the WAL budget is charged at
/// every check.
///
/// `HealthReader` reads the signals, `HealthJudge` judges them; the gate runs one after the other.
struct HealthGate {
    /// Why the job should wait now: one of `ThrottleReason`'s health reasons.
    typealias Reason = ThrottleReason

    let reader: HealthReader
    private(set) var judge: HealthJudge

    /// How long to wait before checking again while a reason holds.
    var retryAfter: Double { judge.retryAfter }

    init(throttle: JobSpec.Throttle, tableOID: Int64, interval: Double = 1, checkTimeoutMs: Int = 5000,
         chargeWal: @escaping (Connection) throws -> Double = { _ in 0 }) {
        reader = HealthReader(throttle: throttle, tableOID: tableOID, checkTimeoutMs: checkTimeoutMs, chargeWal: chargeWal)
        judge = HealthJudge(throttle: throttle, interval: interval)
    }

    /// Whether the slow signals are due at `now` (seconds since the run started).
    func isDue(at now: Double) -> Bool { judge.isDue(at: now) }

    /// Reads the signals and returns the first reason to wait; its detail lists every reason
    /// that holds.
    mutating func check(at now: Double, db: Connection) throws -> (Reason, String)? {
        var reading = HealthReading(walWait: try reader.readWal(db))
        if judge.isDue(at: now) {
            // Due again `interval` from now even when the reading throws.
            judge.slowSignalsRead(at: now)
            reading.slow = try reader.readSlow(db)
        }
        return judge.judge(reading, at: now)
    }
}
