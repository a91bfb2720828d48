import Foundation
import PostgresClient
import Synchronization

/// The session that holds a job's lease, as the lease row and `pg_stat_activity` show it.
public struct LeaseHolder: Error, Sendable, Hashable, CustomStringConvertible {
    public var pid: Int64?
    public var applicationName: String?
    public var host: String?
    public var runner: String?
    /// Seconds since the holder's last heartbeat, when it holds the lease row.
    public var heartbeatAge: Double?

    public var description: String {
        var parts: [String] = []
        if let pid { parts.append("backend pid \(pid)") }
        if let applicationName, !applicationName.isEmpty { parts.append("application_name \(applicationName)") }
        if let host { parts.append("client \(host)") }
        if let runner { parts.append("runner \(runner)") }
        if let heartbeatAge { parts.append("last heartbeat \(String(format: "%.1f", heartbeatAge)) s ago") }
        return parts.isEmpty ? "another session" : parts.joined(separator: ", ")
    }
}

/// One runner per job. The lease is a row in the store's `leases` table (a token, a heartbeat
/// every 2 s, an expiry 15 s after it), which holds through any pooler because every statement on
/// it stands alone. On a direct connection (the server's backend pid is the one libpq was told at
/// login; a pooler hands out its own) it is also a session-level advisory lock on a 64-bit key, on
/// a session with server-side keepalives, so a dead runner's lease dies with its connection.
/// Through a pooler no session lock is ever taken, so none can leak.
final class Lease {
    /// Seconds between heartbeats.
    static let heartbeatSeconds = 2.0
    /// Seconds after the last heartbeat when another runner may take the lease row.
    static let ttlSeconds = 15
    /// Server-side keepalives on a direct lease session: a probe after 10 s idle, then every 5 s,
    /// 3 unanswered → the server ends the session (about 25 s); PostgreSQL 14+ also checks the
    /// client socket every 5 s while a statement runs (`client_connection_check_interval`).
    static let serverKeepalives = ["tcp_keepalives_idle = 10", "tcp_keepalives_interval = 5", "tcp_keepalives_count = 3"]

    let job: String
    let token = UUID().uuidString
    let runner: String
    private let conninfo: String?
    private let store: CheckpointStore
    private var connection: Connection
    /// Whether the lease session is direct (and holds the advisory lock too).
    private var direct = false
    /// The server's start time when the lease was taken: a restart ends every session, so the
    /// lease may be taken again after one; a session ended alone (`pg_terminate_backend`,
    /// `backfill unlock`, a network cut) loses it.
    private var postmasterStart = ""

    private init(job: String, runner: String, conninfo: String?, store: CheckpointStore, connection: Connection) {
        self.job = job
        self.runner = runner
        self.conninfo = conninfo
        self.store = store
        self.connection = connection
    }

    /// The advisory lock's key: 64 bits of FNV-1a over the job name, so that two job names collide
    /// with odds of one in 2^64 (the 32-bit `hashtext` made that one in 4 billion).
    static func advisoryKey(_ job: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "backfill:lease:\(job)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }

    static func applicationName(_ job: String) -> String { "backfill:\(job):lease" }

    /// A condition on `pg_locks` row `k`: it is the granted advisory lock on the 64-bit key `key`
    /// (a SQL expression) in this database. `status`, `unlock` and the lease share it.
    static func isAdvisoryLock(_ k: String, key: String) -> String {
        """
        \(k).locktype = 'advisory' AND \(k).granted AND \(k).database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
        AND \(k).classid = ((\(key) >> 32) & 4294967295)::oid AND \(k).objid = (\(key) & 4294967295)::oid AND \(k).objsubid = 1
        """
    }

    /// Takes the lease, or reports who holds it.
    static func acquire(job: String, runner: String, conninfo: String?, store: CheckpointStore) throws -> Result<Lease, LeaseHolder> {
        let lease = Lease(job: job, runner: runner, conninfo: conninfo, store: store,
                          connection: try SessionPins.connect(conninfo, applicationName: applicationName(job)))
        if let holder = try lease.take(takeOver: true) { return .failure(holder) }
        return .success(lease)
    }

    /// Takes the advisory lock (direct sessions) and the row: a new row, an expired one, or one
    /// whose holder held the advisory lock we now have (so its session is gone). With `takeOver`
    /// false only a row that still carries our token counts (after a server restart).
    private func take(takeOver: Bool) throws -> LeaseHolder? {
        let db = connection
        let session = try db.query(
            "SELECT pg_backend_pid() AS pid, pg_postmaster_start_time()::text AS started, current_setting('server_version_num')::int AS version").first
        direct = db.isDirect(serverPID: session?["pid"].int64)
        postmasterStart = session?["started"].string ?? ""
        let key = Self.advisoryKey(job)
        if direct {
            var settings = Self.serverKeepalives
            // PostgreSQL 14+: check the client while a statement runs, and never end this session
            // for idling between heartbeats (a role's or database's idle_session_timeout).
            if (session?["version"].int ?? 0) >= 140000 { settings += ["client_connection_check_interval = '5s'", "idle_session_timeout = 0"] }
            try db.execute(settings.map { "SET \($0)" }.joined(separator: "; "))
            guard try db.query("SELECT pg_try_advisory_lock($1::bigint) AS ok", [.int(key)]).first?["ok"].bool == true else {
                return try Self.holder(job: job, store: store, db: db)
            }
        }
        let got: Bool
        if takeOver {
            got = try db.query(
                """
                INSERT INTO \(store.leases) AS l (job, token, runner, direct, lock_key, backend_pid, application_name, client, acquired_at, heartbeat_at, expires_at)
                VALUES ($1, $2, $3, $4, $7, pg_backend_pid(), $5,
                        (SELECT coalesce(client_hostname, host(client_addr), 'local socket') FROM pg_stat_activity WHERE pid = pg_backend_pid()),
                        now(), now(), now() + make_interval(secs => $6))
                ON CONFLICT (job) DO UPDATE SET token = excluded.token, runner = excluded.runner, direct = excluded.direct, lock_key = excluded.lock_key,
                    backend_pid = excluded.backend_pid, application_name = excluded.application_name, client = excluded.client,
                    acquired_at = now(), heartbeat_at = now(), expires_at = excluded.expires_at
                WHERE l.expires_at < now() OR (l.direct AND excluded.direct)
                RETURNING token
                """, [.text(job), .text(token), .text(runner), .bool(direct), .text(Self.applicationName(job)), .int(Int64(Self.ttlSeconds)), .int(key)]).first != nil
        } else {
            got = try db.query(
                """
                UPDATE \(store.leases) SET direct = $3, backend_pid = pg_backend_pid(), heartbeat_at = now(), expires_at = now() + make_interval(secs => $4)
                WHERE job = $1 AND token = $2 RETURNING token
                """, [.text(job), .text(token), .bool(direct), .int(Int64(Self.ttlSeconds))]).first != nil
        }
        if got { return nil }
        if direct { try db.query("SELECT pg_advisory_unlock($1::bigint)", [.int(key)]) }
        return try Self.holder(job: job, store: store, db: db) ?? LeaseHolder()
    }

    /// Who holds the job's lease: the row's holder, and the session holding the advisory lock;
    /// nil when nobody does.
    static func holder(job: String, store: CheckpointStore, db: Connection) throws -> LeaseHolder? {
        let key = advisoryKey(job)
        let row = try db.query(
            """
            SELECT coalesce(a.pid, l.backend_pid)::bigint AS pid, coalesce(a.application_name, l.application_name) AS application_name,
                   coalesce(coalesce(a.client_hostname, host(a.client_addr), CASE WHEN a.pid IS NOT NULL THEN 'local socket' END), l.client) AS host,
                   l.runner, extract(epoch FROM now() - l.heartbeat_at)::float8 AS age
            FROM (SELECT 1) one
            LEFT JOIN \(store.leases) l ON l.job = $1
            LEFT JOIN LATERAL (SELECT a.* FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
                               WHERE \(isAdvisoryLock("k", key: "$2::bigint"))
                               ORDER BY a.application_name = $3 DESC LIMIT 1) a ON true
            WHERE l.job IS NOT NULL OR a.pid IS NOT NULL
            """, [.text(job), .int(key), .text(applicationName(job))]).first
        guard let row else { return nil }
        return LeaseHolder(pid: row["pid"].int64, applicationName: row["application_name"].string, host: row["host"].string,
                           runner: row["runner"].string, heartbeatAge: row["age"].double)
    }

    /// What a heartbeat found.
    enum Check: Sendable, Hashable {
        case held
        /// Lost for good, and why.
        case lost(String)
        /// The server cannot be reached right now; try again.
        case unreachable
    }

    /// Moves the heartbeat. After a lost direct session it takes the lease again only when the
    /// server restarted meanwhile (every session ended) and nobody else took it; after a lost
    /// pooled connection, when the row still carries its token.
    func renew() -> Check {
        do {
            let moved = try connection.query(
                "UPDATE \(store.leases) SET heartbeat_at = now(), expires_at = now() + make_interval(secs => $3) WHERE job = $1 AND token = $2 RETURNING 1",
                [.text(job), .text(token), .int(Int64(Self.ttlSeconds))]).first != nil
            return moved ? .held : .lost("the lease row was taken by another runner or removed by `backfill unlock`")
        } catch let error as PostgresError where error.isConnectionLost || !connection.isOpen {
            guard let fresh = try? SessionPins.connect(conninfo, applicationName: Self.applicationName(job)) else { return .unreachable }
            let started = try? fresh.query("SELECT pg_postmaster_start_time()::text AS started").first?["started"].string
            guard let started else { return .unreachable }
            connection = fresh
            // A direct session that ended alone took the advisory lock with it; a pooled one
            // only lost its client connection, and the row may still be ours.
            if started == postmasterStart && direct {
                release()
                return .lost("the lease's session was ended (pg_terminate_backend, `backfill unlock`, a session timeout or a network cut): \(error.message)")
            }
            do {
                if let holder = try take(takeOver: false) { return .lost("after a server restart another runner holds the job: \(holder)") }
                return .held
            } catch {
                return .unreachable
            }
        } catch {
            return .unreachable
        }
    }

    /// Gives the lease up: removes the row (when it is still ours) and ends the session, which
    /// releases the advisory lock.
    func release() {
        _ = try? connection.query("DELETE FROM \(store.leases) WHERE job = $1 AND token = $2", [.text(job), .text(token)])
        connection.close()
    }
}

/// What the workers of a run check when they claim a range, inside the batch transaction: the
/// job's spec hash is still theirs and, for the lease holder, the lease row still carries its
/// token. Shared by the run's store and its lease keeper; it records why the lease was lost.
final class LeaseWatch: Sendable {
    let specHash: String
    private let state = Mutex<(token: String?, lost: String?)>((nil, nil))

    init(specHash: String) { self.specHash = specHash }

    var token: String? { state.withLock { $0.token } }
    var lostReason: String? { state.withLock { $0.lost } }

    func hold(token: String) { state.withLock { $0.token = token } }

    /// Records the first reason the lease was lost.
    func markLost(_ reason: String) { state.withLock { if $0.lost == nil { $0.lost = reason } } }
}

/// Thrown by a claim whose lease or spec no longer holds; the batch rolls back and every worker
/// of the process stops.
struct LeaseLost: Error, CustomStringConvertible {
    var reason: String
    var description: String { "lease lost: \(reason)" }
}
