import Foundation
import PostgresClient

/// Worker heartbeats, for `status`.
extension CheckpointStore {
    /// Records a worker's progress for `status` (a few times a minute, outside batch transactions).
    public func heartbeat(_ job: String, worker: String, range: Int?, rowsDone: Int64, rowsPerSecond: Double, db: Connection) throws {
        try db.query(
            """
            INSERT INTO \(workers) (job, worker, range_id, rows_done, rows_per_second) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (job, worker) DO UPDATE SET range_id = excluded.range_id, rows_done = excluded.rows_done,
                rows_per_second = excluded.rows_per_second, last_seen = now()
            """, [.text(job), .text(worker), range.map { .int(Int64($0)) } ?? .null, .int(rowsDone), .double(rowsPerSecond)])
    }
}
