import PostgresClient

/// The session that holds a job's lease, as `pg_stat_activity` shows it.
public struct LeaseHolder: Error, Sendable, Hashable, CustomStringConvertible {
    public var pid: Int64?
    public var applicationName: String?
    public var host: String?
    public var runner: String?

    public var description: String {
        var parts: [String] = []
        if let pid { parts.append("backend pid \(pid)") }
        if let applicationName, !applicationName.isEmpty { parts.append("application_name \(applicationName)") }
        if let host { parts.append("client \(host)") }
        if let runner { parts.append("runner \(runner)") }
        return parts.isEmpty ? "another session" : parts.joined(separator: ", ")
    }
}

/// One runner per job: a session-level advisory lock keyed by the job name, held on a connection of
/// its own for the whole run. It dies with its connection, so a dead runner never blocks the next.
/// Behind PgBouncer in transaction mode session locks do not hold: give the runner a direct URL.
final class Lease {
    /// A fixed first key, so that Backfill's locks do not collide with an application's own.
    static let namespace: Int64 = 0x4246_0001
    let connection: Connection
    let job: String

    private init(connection: Connection, job: String) {
        self.connection = connection
        self.job = job
    }

    /// Takes the lease, or reports who holds it.
    static func acquire(job: String, conninfo: String?, store: CheckpointStore) throws -> Result<Lease, LeaseHolder> {
        let db = try Connection(conninfo, applicationName: "backfill:\(job):lease")
        let got = try db.query("SELECT pg_try_advisory_lock($1::int, hashtext($2)) AS ok", [.int(namespace), .text(job)]).first?["ok"].bool ?? false
        if got { return .success(Lease(connection: db, job: job)) }
        let row = try db.query(
            """
            SELECT a.pid::bigint AS pid, a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local socket') AS host
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = $1::int::oid AND l.objid = hashtext($2)::oid AND l.objsubid = 2
            LIMIT 1
            """, [.int(namespace), .text(job)]).first
        let runner = try? store.status(job: job, db: db).first?.runner
        return .failure(LeaseHolder(pid: row?["pid"].int64, applicationName: row?["application_name"].string, host: row?["host"].string, runner: runner ?? nil))
    }

    /// Whether the lease's connection is still alive (so the lock is still held).
    var isHeld: Bool {
        (try? connection.query("SELECT 1")) != nil
    }
}
