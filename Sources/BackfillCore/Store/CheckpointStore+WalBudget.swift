import Foundation
import PostgresClient

/// The job-wide WAL budget (`throttle.max_wal_mb_per_second`): a `WalBudget` whose state lives in
/// the job's row, read and written under the row's lock, with the server's clock.
extension CheckpointStore {
    /// Charges the WAL written since the job's last sample (by anyone: the budget is the
    /// cluster's WAL rate while the job runs) and returns how long to wait before the next batch.
    public func consumeWal(_ job: String, mbPerSecond: Int, db: Connection) throws -> Double {
        try db.transaction { db in
            guard let row = try db.query(
                """
                SELECT wal_tokens, wal_lsn, wal_at, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn,
                       extract(epoch FROM clock_timestamp())::float8 AS now
                FROM \(jobs) WHERE name = $1 FOR UPDATE
                """, [.text(job)]).first, let lsn = row["lsn"].int64, let now = row["now"].double
            else { return 0 }
            var budget = WalBudget(mbPerSecond: mbPerSecond, tokens: row["wal_tokens"].double ?? 0,
                                   lastLSN: row["wal_lsn"].int64.map { UInt64(max($0, 0)) }, lastSeconds: row["wal_at"].double)
            let wait = budget.observe(lsn: UInt64(max(lsn, 0)), now: now)
            try db.query("UPDATE \(jobs) SET wal_tokens = $2, wal_lsn = $3, wal_at = $4 WHERE name = $1",
                         [.text(job), .double(budget.tokens), .int(lsn), .double(now)])
            return wait
        }
    }
}
