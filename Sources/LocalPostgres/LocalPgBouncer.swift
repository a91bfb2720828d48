import Foundation
import PostgresClient
import Synchronization

/// A throwaway PgBouncer (the `pgbouncer` program, Debian's package) in front of a `LocalPostgres`,
/// for the tests of Backfill through a pooler. Its ini and user list live in a temporary directory
/// removed by `stop()`; it reaches the server over its Unix socket and listens on 127.0.0.1. It
/// refuses to run as root, so as root it runs as the `postgres` user.
///
/// `pgbouncer -d` daemonizes, so nothing ends it but a signal: `stop()` runs when its owner stops
/// it, when it is released (`deinit`), and at the process's normal exit; a PgBouncer whose owning
/// process died without any of these is killed by the next `LocalPgBouncer` started.
public final class LocalPgBouncer: LocalServer {
    /// How PgBouncer hands out server connections.
    public enum PoolMode: String, Sendable { case session, transaction }

    public let port: Int
    public let poolMode: PoolMode
    public let directory: String
    private let server: LocalPostgres
    private let stopped = Atomic<Bool>(false)
    private static let directoryPrefix = "backfill-pgbouncer-"

    /// Starts PgBouncer in `mode` in front of `server` and waits until it accepts connections.
    public init(in front: LocalPostgres, mode: PoolMode) throws {
        guard let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw LocalPostgres.Failure(description: "pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run installs it)")
        }
        DaemonFiles.reapOrphans(prefix: Self.directoryPrefix, pidFile: "pgbouncer.pid")
        server = front
        poolMode = mode
        port = try LocalPostgres.freePort()
        directory = "/tmp/\(Self.directoryPrefix)\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try DaemonFiles.recordOwner(in: directory)
        ExitRegistry.register(self)
        let ini = """
            [databases]
            * = host=\(front.socketDirectory) port=\(front.port) user=\(LocalPostgres.superuser)
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(port)
            unix_socket_dir =
            auth_type = trust
            auth_file = \(directory)/userlist.txt
            pool_mode = \(mode.rawValue)
            max_client_conn = 200
            default_pool_size = 20
            server_reset_query = DISCARD ALL
            ignore_startup_parameters = extra_float_digits
            pidfile = \(directory)/pgbouncer.pid
            logfile = \(directory)/pgbouncer.log

            """
        try ini.write(toFile: directory + "/pgbouncer.ini", atomically: true, encoding: .utf8)
        try "\"\(LocalPostgres.superuser)\" \"\"\n".write(toFile: directory + "/userlist.txt", atomically: true, encoding: .utf8)
        let asPostgres = geteuid() == 0
        if asPostgres { try LocalPostgres.chownToPostgres([directory, directory + "/pgbouncer.ini", directory + "/userlist.txt"]) }
        try LocalPostgres.run(program, ["-d", directory + "/pgbouncer.ini"], asPostgres: asPostgres)
        let deadline = Date().addingTimeInterval(15)
        while (try? Connection(conninfo(database: "postgres"), connectTimeoutSeconds: 2)) == nil {
            guard Date() < deadline else {
                let log = (try? String(contentsOfFile: directory + "/pgbouncer.log", encoding: .utf8)) ?? ""
                stop()
                throw LocalPostgres.Failure(description: "pgbouncer did not accept connections within 15 s: \(log.suffix(2000))")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// A connection string for `database` through the pooler.
    public func conninfo(database: String) -> String {
        "host=127.0.0.1 port=\(port) user=\(LocalPostgres.superuser) dbname='\(database)'"
    }

    deinit { stop() }

    /// Stops PgBouncer and removes its directory. Safe to call more than once. SIGTERM is
    /// PgBouncer's immediate shutdown (SIGINT waits for its clients to leave, which a test's own
    /// open connections never do); SIGKILL after 5 s.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        DaemonFiles.kill(pidFile: directory + "/pgbouncer.pid")
        try? FileManager.default.removeItem(atPath: directory)
    }
}
