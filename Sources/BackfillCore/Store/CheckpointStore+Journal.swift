import Foundation
import PostgresClient

/// The journal of a job with `journal: true` (docs/journal.md): what each batch replaced, written
/// by the batch statement itself, and the state of `backfill revert`, which walks it back.
extension CheckpointStore {
    /// The journal INSERT of a batch: a CTE of the batch statement that reads the changed rows'
    /// `backfill_key`, `backfill_old` and `backfill_new` from `changed`, tagged with the job's
    /// pass; `seq` (an identity, in the order rows were journaled) is what a revert walks back.
    /// The job is bound.
    public func journal(_ job: String) -> SQL? {
        let name = SQL.Slot("job")
        let insert: SQL = "INSERT INTO \(unescaped: journalTable) (job, pass, key, old, new) SELECT \(name), (SELECT pass FROM \(unescaped: jobs) WHERE name = \(name)), "
            + "backfill_key, backfill_old, backfill_new FROM changed"
        return insert.binding(name, to: .text(job))
    }

    /// How many rows the job's journal holds; 0 for a store made before journals existed.
    public func journalRows(_ job: String, db: Connection) throws -> Int64 {
        guard try exists(journalTable, db: db) else { return 0 }
        return try db.query("SELECT count(*) AS n FROM \(journalTable) WHERE job = $1", [.text(job)]).first?["n"].int64 ?? 0
    }

    /// Deletes a job's journal and revert conflicts (`forget`, `run --restart`), in the caller's
    /// transaction.
    func dropJournal(_ job: String, db: Connection) throws {
        guard try exists(journalTable, db: db) else { return }
        try db.query("DELETE FROM \(journalTable) WHERE job = $1", [.text(job)])
    }

    private func exists(_ table: String, db: Connection) throws -> Bool {
        try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(table)]).first?["present"].bool == true
    }

    /// Where a revert stands: the journal `seq` it put back last (nil: none yet; the revert walks
    /// from the newest row down), and its counts so far.
    public struct RevertPosition: Sendable, Hashable {
        public var lastSeq: Int64?
        public var restored: Int64
        public var conflicts: Int64
    }

    /// What `startRevert` found.
    public enum RevertStart: Sendable, Hashable {
        case started(RevertPosition)
        case refused(JobState, String)
        case alreadyReverted(RevertPosition)
        case notFound
        case specChanged
    }

    /// Moves the job to `reverting` as `JobLifecycle` allows, under its row's lock; a stopped
    /// revert goes on from its checkpoint.
    public func startRevert(_ job: String, fingerprint: String, runner: String, db: Connection) throws -> RevertStart {
        try db.transaction { db in
            guard let row = try db.query("SELECT state, spec_hash FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(job)]).first,
                  let state = JobState(rawValue: row["state"].string ?? "")
            else { return .notFound }
            if row["spec_hash"].string != fingerprint { return .specChanged }
            switch JobLifecycle.decide(.starts, from: state) {
            case .refuse(let reason):
                if state == .reverted { return .alreadyReverted(try revertPosition(job, db: db)) }
                return .refused(state, reason)
            case .remove:
                return .refused(state, "cannot be reverted")
            case .to(let next):
                try db.query(
                    "UPDATE \(jobs) SET state = $2, runner = $3, updated_at = now(), paused_by = NULL, paused_at = NULL, last_error = NULL WHERE name = $1",
                    [.text(job), .text(next.rawValue), .text(runner)])
                return .started(try revertPosition(job, db: db))
            }
        }
    }

    public func revertPosition(_ job: String, db: Connection) throws -> RevertPosition {
        let row = try db.query("SELECT revert_last, revert_restored, revert_conflicts FROM \(jobs) WHERE name = $1", [.text(job)]).first
        return RevertPosition(lastSeq: row?["revert_last"].int64, restored: row?["revert_restored"].int64 ?? 0, conflicts: row?["revert_conflicts"].int64 ?? 0)
    }

    /// The whole journal is walked back: the job is `reverted` (unless an operator paused or
    /// cancelled it meanwhile).
    public func finishRevert(_ job: String, db: Connection) throws {
        try db.query("UPDATE \(jobs) SET state = 'reverted', finished_at = now(), updated_at = now() WHERE name = $1 AND state = 'reverting'", [.text(job)])
    }

    /// Records where a stopped revert ends (`reverting` stays, or a pause or cancel is kept).
    public func stopRevert(_ job: String, error: String?, db: Connection) throws {
        try db.query("UPDATE \(jobs) SET updated_at = now(), last_error = $2 WHERE name = $1",
                     [.text(job), error.map { .text(ConnectionInfo.scrub($0)) } ?? .null])
    }

    /// A journaled row a revert left because the application changed it since the job wrote it.
    public struct RevertConflict: Sendable, Hashable, Codable {
        public var key: [String]
        public var pass: Int
        public var detectedAt: Date?

        enum CodingKeys: String, CodingKey {
            case key, pass
            case detectedAt = "detected_at"
        }
    }

    /// The rows a revert left, in key order per pass; nil when the store has no such job.
    public func revertConflicts(job: String, db: Connection) throws -> [RevertConflict]? {
        guard try exists(jobs, db: db), try db.query("SELECT 1 FROM \(jobs) WHERE name = $1", [.text(job)]).first != nil else { return nil }
        guard try exists(revertConflicts, db: db) else { return [] }
        return try db.query("SELECT key::text AS key, pass, detected_at FROM \(revertConflicts) WHERE job = $1 ORDER BY pass DESC, key", [.text(job)]).rows.map { row in
            RevertConflict(key: try Self.decodeKey(row["key"].string ?? "[]"), pass: row["pass"].int ?? 1, detectedAt: row["detected_at"].date)
        }
    }

    /// The revert batch of `BatchStatements.revert`, with this store's tables.
    public func revertTables() -> RevertTables {
        RevertTables(journal: journalTable, conflicts: revertConflicts, jobs: jobs, leases: leases)
    }
}

/// The store's tables a revert batch reads and writes.
public struct RevertTables: Sendable, Hashable {
    public var journal: String
    public var conflicts: String
    public var jobs: String
    public var leases: String

    public init(journal: String, conflicts: String, jobs: String, leases: String) {
        self.journal = journal
        self.conflicts = conflicts
        self.jobs = jobs
        self.leases = leases
    }
}
