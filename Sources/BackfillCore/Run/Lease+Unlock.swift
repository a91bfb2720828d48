import Foundation
import PostgresClient

/// What `backfill unlock` found and did.
public enum UnlockOutcome: Sendable {
    /// Nobody holds the job's lease.
    case notHeld
    /// The holder's heartbeat is newer than `staleAfter`: nothing was done.
    case fresh(LeaseHolder)
    /// The holder's sessions were terminated (their backend pids) and the lease row removed.
    case released(LeaseHolder, terminated: [Int64])

    /// Whether a holder whose last heartbeat was `heartbeatAge` seconds ago may be unlocked. A
    /// holder with no heartbeat (only a session lock, which the server says is alive) counts as
    /// fresh.
    public static func mayUnlock(heartbeatAge: Double?, staleAfter: Double, force: Bool) -> Bool {
        force || (heartbeatAge ?? 0) >= staleAfter
    }
}

extension CheckpointStore {
    /// Frees a job whose runner is gone or frozen: when its last heartbeat is at least
    /// `staleAfter` seconds old (or with `force`), terminates the sessions of the job's runner
    /// (verified by name: every session named `backfill:<job>` or `backfill:<job>:lease`, the
    /// lease session among them; `--join` workers reconnect) and removes the lease row.
    /// Terminating needs the holder's role or membership in `pg_signal_backend`.
    public func unlock(job: String, staleAfter: Double, force: Bool, db: Connection) throws -> UnlockOutcome {
        let hasLeases = try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(leases)]).first?["present"].bool ?? false
        guard hasLeases, let holder = try Lease.holder(job: job, store: self, db: db) else { return .notHeld }
        guard UnlockOutcome.mayUnlock(heartbeatAge: holder.heartbeatAge, staleAfter: staleAfter, force: force) else { return .fresh(holder) }
        let terminated = try db.query(
            """
            WITH targets AS MATERIALIZED (
                SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name IN ($1, $2))
            SELECT pid::bigint AS pid FROM targets WHERE pg_terminate_backend(pid) ORDER BY pid
            """, [.text("backfill:\(job)"), .text(Lease.applicationName(job))]).rows.compactMap { $0["pid"].int64 }
        try db.query("DELETE FROM \(leases) WHERE job = $1", [.text(job)])
        // The terminated sessions end (and drop their advisory lock) a moment later.
        let key = Lease.advisoryKey(job)
        for _ in 0..<50 {
            let held = try db.query(
                "SELECT count(*)::int AS n FROM pg_locks k WHERE \(Lease.isAdvisoryLock("k", key: "$1::bigint"))",
                [.int(key)]).first?["n"].int ?? 0
            if held == 0 { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return .released(holder, terminated: terminated)
    }
}
