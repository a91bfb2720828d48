#if !os(Linux)
#error("Backfill builds on Linux only: LocalPostgres uses Glibc's posix_spawn, socket and runuser interfaces")
#endif

import Foundation
import PostgresClient
import Synchronization

/// A throwaway PostgreSQL cluster for the demo, the tests and the benchmarks.
///
/// `start()` runs `initdb` in a new temporary directory, picks a free port, and starts the server
/// with `pg_ctl -w`, listening on 127.0.0.1 and on a private socket directory. `stop()` stops it
/// and deletes the directory; clusters whose owning process died without stopping them are
/// removed by the next `start()`. Running as root, `initdb` and `pg_ctl` run as the `postgres`
/// user, since PostgreSQL refuses to run as root.
public final class LocalPostgres: LocalServer {
    /// Errors starting or driving the cluster, with what to do about them.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String

        public init(description: String) { self.description = description }
    }

    /// The TCP port on 127.0.0.1.
    public let port: Int
    /// The private directory holding the server's Unix socket.
    public let socketDirectory: String
    /// The cluster's data directory.
    public let dataDirectory: String
    /// The temporary directory that holds everything; removed by `stop()`.
    public let rootDirectory: String
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    public let binDirectory: String
    /// The server's log file.
    public let logFile: String
    private let runAsPostgres: Bool
    private let stopped = Atomic<Bool>(false)

    /// The superuser's name in the cluster.
    public static let superuser = "postgres"
    /// The superuser's password over TCP (Unix sockets trust local users): random for each
    /// cluster, so that no fixed password ships in the binary.
    public let password = UUID().uuidString

    /// Starts a new cluster.
    ///
    /// - Parameters:
    ///   - durable: keep PostgreSQL's default durability (`fsync`, `full_page_writes`); the
    ///     benchmarks want that, tests run faster without it.
    ///   - settings: extra `postgresql.conf` settings.
    ///   - stopAtExit: stop and remove the cluster when the process exits normally.
    public static func start(
        durable: Bool = false, settings: [String: String] = [:], stopAtExit: Bool = true
    ) throws -> LocalPostgres {
        let bin = try findBinDirectory()
        reapOrphans(bin: bin)
        let runAsPostgres = geteuid() == 0
        var lastError: Error?
        for _ in 0..<5 {
            do {
                let cluster = try LocalPostgres(
                    bin: bin, runAsPostgres: runAsPostgres, durable: durable, settings: settings)
                if stopAtExit { ExitRegistry.register(cluster) }
                return cluster
            } catch let failure as Failure where failure.description.contains("could not bind") || failure.description.contains("in use") {
                lastError = failure  // another suite took the port between our probe and the start
            }
        }
        throw lastError ?? Failure(description: "could not start PostgreSQL")
    }

    /// How a new cluster's data directory comes to be.
    private enum Origin {
        case initdb
        /// A streaming-replication standby of the cluster with this socket directory and port.
        case standby(socketDirectory: String, port: Int)
    }

    private init(bin: String, runAsPostgres: Bool, durable: Bool, settings: [String: String], origin: Origin = .initdb) throws {
        let fm = FileManager.default
        let root = try Self.makeTemporaryDirectory()
        self.rootDirectory = root
        self.dataDirectory = root + "/data"
        self.socketDirectory = root + "/socket"
        self.logFile = root + "/server.log"
        self.binDirectory = bin
        self.runAsPostgres = runAsPostgres
        self.port = try Self.freePort()
        try fm.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        try String(getpid()).write(toFile: root + "/owner.pid", atomically: true, encoding: .utf8)
        if runAsPostgres { try Self.chownToPostgres([root, socketDirectory, root + "/owner.pid"]) }

        do {
            switch origin {
            case .initdb:
                try run(
                    "initdb",
                    ["-D", dataDirectory, "-U", Self.superuser, "-E", "UTF8", "--no-locale", "--no-sync",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + (try writePasswordFile())])
            case .standby(let primarySocket, let primaryPort):
                try run(
                    "pg_basebackup",
                    ["-D", dataDirectory, "-h", primarySocket, "-p", String(primaryPort), "-U", Self.superuser,
                     "-R", "-X", "stream", "--no-sync", "-c", "fast"])
            }
            var conf: [String: String] = [
                "port": String(port),
                "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": "'\(socketDirectory)'",
                "max_connections": "200",
                "logging_collector": "off",
                "log_min_messages": "warning",
                "wal_receiver_status_interval": "'1s'",
            ]
            if !durable {
                conf["fsync"] = "off"
                conf["synchronous_commit"] = "off"
                conf["full_page_writes"] = "off"
            }
            for (key, value) in settings { conf[key] = value }
            let lines = conf.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: "\n")
            let confPath = dataDirectory + "/postgresql.auto.conf"
            let existing = (try? String(contentsOfFile: confPath, encoding: .utf8)) ?? ""
            try (existing + "\n" + lines + "\n").write(toFile: confPath, atomically: false, encoding: .utf8)
            try run("pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "start"])
        } catch {
            let log = (try? String(contentsOfFile: root + "/server.log", encoding: .utf8)) ?? ""
            try? fm.removeItem(atPath: root)
            throw Failure(description: "\(error)\n\(log.suffix(2000))")
        }
    }

    /// Starts a streaming-replication standby of this cluster (`pg_basebackup -R`), for tests of
    /// replica-lag throttling. Stop it before the primary.
    public func startStandby() throws -> LocalPostgres {
        let standby = try LocalPostgres(
            bin: binDirectory, runAsPostgres: runAsPostgres, durable: false, settings: [:],
            origin: .standby(socketDirectory: socketDirectory, port: port))
        ExitRegistry.register(standby)
        return standby
    }

    deinit { stop() }

    /// A keyword connection string for `database` as the superuser over the Unix socket.
    public func conninfo(database: String = "postgres") -> String {
        "host='\(socketDirectory)' port=\(port) user=\(Self.superuser) dbname='\(database)'"
    }

    /// A `postgresql://` URL for `database` over TCP with the superuser's password.
    public func url(database: String = "postgres") -> String {
        "postgresql://\(Self.superuser):\(password)@127.0.0.1:\(port)/\(database)"
    }

    /// Creates an empty database and returns its connection string.
    public func createDatabase(_ name: String) throws -> String {
        let admin = try Connection(conninfo(), applicationName: "backfill-local-postgres")
        try admin.execute("CREATE DATABASE \(Identifier.quote(name))")
        return conninfo(database: name)
    }

    /// Restarts the server the way an operator's fast restart does: every session is
    /// disconnected (`57P01`), then the server comes back on the same port.
    public func restart() throws {
        try run("pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "-m", "fast", "restart"])
    }

    /// Crashes the server and starts it again, the way a power loss or an OOM kill does:
    /// `pg_ctl stop -m immediate` (no checkpoint, unwritten WAL lost), then crash recovery.
    public func crashAndRecover() throws {
        try run("pg_ctl", ["-D", dataDirectory, "-w", "-t", "30", "-m", "immediate", "stop"])
        try run("pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "start"])
    }

    /// Stops the server and removes its directory. Safe to call more than once.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? run("pg_ctl", ["-D", dataDirectory, "-w", "-t", "30", "-m", "immediate", "stop"])
        try? FileManager.default.removeItem(atPath: rootDirectory)
    }

    private func writePasswordFile() throws -> String {
        let path = rootDirectory + "/pwfile"
        try password.write(toFile: path, atomically: true, encoding: .utf8)
        if runAsPostgres { try Self.chownToPostgres([path]) }
        return path
    }

    private func run(_ tool: String, _ arguments: [String]) throws {
        try Self.run(binDirectory + "/" + tool, arguments, asPostgres: runAsPostgres)
    }

    // MARK: - Process and file system helpers

    /// Runs a program to completion with `posix_spawn` and `waitpid`. Foundation's `Process` is
    /// not used here: it waits for its own pipe to close, and `pg_ctl start` leaves a daemon behind
    /// that inherits it.
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool) throws {
        let argv = asPostgres ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        let output = "/tmp/backfill-cmd-\(UUID().uuidString).log"
        defer { unlink(output) }
        let pid = try spawn(argv, output: output)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            throw Failure(
                description: "\((executable as NSString).lastPathComponent) \(arguments.joined(separator: " ")) failed (\(exited ? "exit \(code)" : "signal \(status & 0x7f)")): \(text.suffix(2000))")
        }
    }

    /// Starts `argv` with `posix_spawn`, stdin from /dev/null, stdout and stderr to `output`, and
    /// returns its pid without waiting for it.
    static func spawn(_ argv: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard spawned == 0 else {
            throw Failure(description: "could not start \(argv[0]): \(String(cString: strerror(spawned)))")
        }
        return pid
    }

    static func findBinDirectory() throws -> String {
        var candidates: [String] = []
        if let bindir = try? capture("pg_config", ["--bindir"]) { candidates.append(bindir) }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        candidates += versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
        for dir in candidates where FileManager.default.isExecutableFile(atPath: dir + "/initdb")
            && FileManager.default.isExecutableFile(atPath: dir + "/pg_ctl")
        {
            return dir
        }
        throw Failure(
            description: "PostgreSQL server programs (initdb, pg_ctl) not found in `pg_config --bindir` or /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` (Debian/Ubuntu) and make sure pg_config is on PATH")
    }

    private static func capture(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw Failure(description: "\(tool) failed") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static let directoryPrefix = "backfill-pg-"

    private static func makeTemporaryDirectory() throws -> String {
        let base = "/tmp"
        let path = base + "/" + directoryPrefix + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    static func chownToPostgres(_ paths: [String]) throws {
        guard let pw = getpwnam("postgres") else {
            throw Failure(description: "running as root, but there is no `postgres` user to run PostgreSQL as; install the `postgresql` package, which creates it")
        }
        for path in paths where chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) != 0 {
            throw Failure(description: "could not give \(path) to the postgres user: errno \(errno)")
        }
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw Failure(description: "bind() failed: errno \(errno)") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure(description: "getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Stops clusters left behind by processes that died without stopping them (a test run
    /// interrupted by a signal, a benchmark killed by hand).
    private static func reapOrphans(bin: String) {
        let base = "/tmp"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        for entry in entries where entry.hasPrefix(directoryPrefix) {
            let root = base + "/" + entry
            guard let text = try? String(contentsOfFile: root + "/owner.pid", encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            if kill(pid, 0) == 0 || errno != ESRCH { continue }
            if FileManager.default.fileExists(atPath: root + "/data/postmaster.pid") {
                try? run(bin + "/pg_ctl", ["-D", root + "/data", "-w", "-t", "30", "-m", "immediate", "stop"], asPostgres: geteuid() == 0)
            }
            try? FileManager.default.removeItem(atPath: root)
        }
    }
}
