import Foundation
import PostgresClient

/// The job-wide rate budget (`throttle.max_rows_per_second`): a token bucket in the job's row.
extension CheckpointStore {
    /// The job-wide token bucket for `throttle.max_rows_per_second`, shared by every worker of
    /// every process: takes `rows` and returns how long to wait before the next batch.
    public func consumeRate(_ job: String, rows: Int64, rowsPerSecond: Int, db: Connection) throws -> Double {
        let tokens = try db.query(
            """
            UPDATE \(jobs) SET
                bucket_tokens = least($3::float8, coalesce(bucket_tokens, 0) + coalesce(extract(epoch FROM clock_timestamp() - bucket_at), 0) * $3::float8) - $2,
                bucket_at = clock_timestamp()
            WHERE name = $1 RETURNING bucket_tokens
            """, [.text(job), .int(rows), .int(Int64(rowsPerSecond))]).first?["bucket_tokens"].double ?? 0
        return tokens >= 0 ? 0 : -tokens / Double(rowsPerSecond)
    }
}
