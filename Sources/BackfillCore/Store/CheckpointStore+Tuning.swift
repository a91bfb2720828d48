import Foundation
import PostgresClient

/// Live tuning (`backfill tune`): overrides in the job's row, with who set them and when. Workers
/// read them in their claim, which already reads the job's row.
extension CheckpointStore {
    /// What `tune` did.
    public enum TuneResult: Sendable, Hashable {
        /// The job's overrides now (nil: none left).
        case applied(Tuning?)
        case notFound
        /// The store predates tuning (version 9); a `run` of this version upgrades it.
        case storeTooOld(Int)
    }

    /// The columns of the job row that hold the overrides, selected from `alias`.
    static func tuningColumns(_ alias: String) -> String {
        ["tuned_max_rows_per_second", "tuned_target_ms", "tuned_pause_ms", "tuned_workers", "tuned_by", "tuned_at"]
            .map { "\(alias).\($0)" }.joined(separator: ", ")
    }

    /// The same columns as NULLs, for a store that predates them.
    static let noTuningColumns = "NULL::int AS tuned_max_rows_per_second, NULL::int AS tuned_target_ms, NULL::int AS tuned_pause_ms, NULL::int AS tuned_workers, NULL::text AS tuned_by, NULL::timestamptz AS tuned_at"

    /// The overrides in a row that selected `tuningColumns`; nil when none is set.
    static func tuning(in row: PostgresRow) -> Tuning? {
        let tuning = Tuning(maxRowsPerSecond: row["tuned_max_rows_per_second"].int, targetMs: row["tuned_target_ms"].int,
                            pauseMs: row["tuned_pause_ms"].int, workers: row["tuned_workers"].int,
                            by: row["tuned_by"].string, at: row["tuned_at"].date)
        return tuning.isEmpty ? nil : tuning
    }

    /// Sets the given overrides (the others keep their value), or with `reset` clears them all,
    /// recording who and when. Never creates or upgrades the store.
    public func tune(_ job: String, _ overrides: Tuning, reset: Bool, by actor: String, db: Connection) throws -> TuneResult {
        guard let version = try storedVersion(db) else {
            return try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(jobs)]).first?["present"].bool == true ? .storeTooOld(0) : .notFound
        }
        guard version >= 9 else { return .storeTooOld(version) }
        let values: [PostgresValue] = [overrides.maxRowsPerSecond, overrides.targetMs, overrides.pauseMs, overrides.workers].map { $0.map { .int(Int64($0)) } ?? .null }
        guard let row = try db.query(
            """
            UPDATE \(jobs) SET
                tuned_max_rows_per_second = CASE WHEN $2 THEN NULL ELSE coalesce($3::int, tuned_max_rows_per_second) END,
                tuned_target_ms = CASE WHEN $2 THEN NULL ELSE coalesce($4::int, tuned_target_ms) END,
                tuned_pause_ms = CASE WHEN $2 THEN NULL ELSE coalesce($5::int, tuned_pause_ms) END,
                tuned_workers = CASE WHEN $2 THEN NULL ELSE coalesce($6::int, tuned_workers) END,
                tuned_by = CASE WHEN $2 THEN NULL ELSE $7 END,
                tuned_at = CASE WHEN $2 THEN NULL ELSE now() END
            WHERE name = $1
            RETURNING \(Self.tuningColumns(jobs))
            """, [.text(job), .bool(reset)] + values + [.text(actor)]).first
        else { return .notFound }
        return .applied(Self.tuning(in: row))
    }

    /// The job's overrides, read when a run starts (for `workers`).
    public func tuning(_ job: String, db: Connection) throws -> Tuning? {
        try db.query("SELECT \(Self.tuningColumns("j")) FROM \(jobs) j WHERE j.name = $1", [.text(job)]).first.flatMap(Self.tuning(in:))
    }
}
