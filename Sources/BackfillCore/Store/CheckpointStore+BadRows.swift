import Foundation
import PostgresClient

/// A row that could not be written, as `backfill bad-rows` lists it.
public struct BadRow: Sendable, Hashable, Codable {
    /// The row's key: the key columns' text forms.
    public var key: [String]
    public var sqlstate: String
    public var message: String
    public var detail: String?
    /// The pass over the key space that found it, and the range it lies in.
    public var pass: Int
    public var range: Int
    public var detectedAt: Date?

    enum CodingKeys: String, CodingKey {
        case key, sqlstate, message, detail, pass, range
        case detectedAt = "detected_at"
    }
}

/// Quarantined rows (`on_error: skip`): a key the bisection of a failed batch found bad is
/// recorded in `bad_rows` in the same transaction that moves the checkpoint past it, so that a
/// rerun never records it twice nor passes over it unrecorded.
extension CheckpointStore {
    /// Records a bad row inside the caller's batch transaction; returns the job's bad rows, this
    /// one included. Recordings of one job are serialised by a transaction-level advisory lock,
    /// so that two workers never both pass `on_error.max_rows` unseen. A key found again in a
    /// later pass keeps one row, with the newest error.
    public func quarantine(_ job: String, range: Int, key: [String], error: PostgresError, worker: String, db: Connection) throws -> Int64 {
        var pipeline = Pipeline([
            Connection.Statement("SELECT pg_advisory_xact_lock(hashtext($1))", [.text("backfill-bad-rows:\(schema):\(job)")]),
            Connection.Statement(
                """
                INSERT INTO \(badRowsTable) (job, key, pass, range_id, sqlstate, message, detail, worker)
                VALUES ($1, $2::jsonb, (SELECT pass FROM \(jobs) WHERE name = $1), $3, $4, $5, $6, $7)
                ON CONFLICT (job, key) DO UPDATE SET pass = EXCLUDED.pass, range_id = EXCLUDED.range_id, sqlstate = EXCLUDED.sqlstate,
                    message = EXCLUDED.message, detail = EXCLUDED.detail, worker = EXCLUDED.worker, detected_at = now()
                """,
                [.text(job), .text(Self.encodeKey(key)), .int(Int64(range)), .text(error.code.raw), .text(ConnectionInfo.scrub(error.message)),
                 error.detail.map { .text(ConnectionInfo.scrub($0)) } ?? .null, .text(worker)]),
        ])
        let count = pipeline.append(Connection.Statement("SELECT count(*) AS n FROM \(badRowsTable) WHERE job = $1", [.text(job)]))
        return try db.run(pipeline)[count].first?["n"].int64 ?? 0
    }

    /// How many rows the job has quarantined (0 for a store made before bad rows existed).
    public func badRowCount(_ job: String, db: Connection) throws -> Int64 {
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(badRowsTable)]).first?["present"].bool == true else { return 0 }
        return try db.query("SELECT count(*) AS n FROM \(badRowsTable) WHERE job = $1", [.text(job)]).first?["n"].int64 ?? 0
    }

    /// The job's quarantined rows in the order they were found; nil when the store has no such
    /// job.
    public func badRows(job: String, db: Connection) throws -> [BadRow]? {
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(jobs)]).first?["present"].bool == true,
              try db.query("SELECT 1 FROM \(jobs) WHERE name = $1", [.text(job)]).first != nil
        else { return nil }
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(badRowsTable)]).first?["present"].bool == true else { return [] }
        return try db.query(
            """
            SELECT key::text AS key, sqlstate, message, detail, pass, range_id, detected_at FROM \(badRowsTable)
            WHERE job = $1 ORDER BY detected_at, key
            """, [.text(job)]
        ).rows.map { row in
            BadRow(key: try Self.decodeKey(row["key"].string ?? "[]"), sqlstate: row["sqlstate"].string ?? "", message: row["message"].string ?? "",
                   detail: row["detail"].string, pass: row["pass"].int ?? 1, range: row["range_id"].int ?? 0, detectedAt: row["detected_at"].date)
        }
    }
}
