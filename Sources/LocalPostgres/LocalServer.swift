import Foundation
import Synchronization

/// A server the tests or the demo start (PostgreSQL, PgBouncer, Prometheus), stopped when the
/// process exits normally if its owner did not stop it first. `stop()` must be safe to call twice.
public protocol LocalServer: AnyObject, Sendable {
    func stop()
}

/// Servers to stop when the process exits normally.
enum ExitRegistry {
    static let servers = Mutex<[any LocalServer]>([])
    static let installed = Atomic<Bool>(false)

    static func register(_ server: any LocalServer) {
        servers.withLock { $0.append(server) }
        if !installed.exchange(true, ordering: .acquiringAndReleasing) {
            atexit {
                let all = ExitRegistry.servers.withLock { list in
                    defer { list.removeAll() }
                    return list
                }
                all.reversed().forEach { $0.stop() }
            }
        }
    }
}

/// The files of a daemon a test starts in a directory `/tmp/<prefix>…` of its own: `owner.pid`
/// (the test process) and the daemon's pid file, so that a daemon whose owner died without
/// stopping it (killed, crashed) is found and killed by the next one started.
enum DaemonFiles {
    /// Writes `owner.pid` into `directory`.
    static func recordOwner(in directory: String) throws {
        try String(getpid()).write(toFile: directory + "/owner.pid", atomically: true, encoding: .utf8)
    }

    /// Ends the process named in `pidFile`: SIGTERM, then SIGKILL if it is still there after 5 s.
    static func kill(pidFile: String) {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else { return }
        Glibc.kill(pid, SIGTERM)
        for _ in 0..<50 where Glibc.kill(pid, 0) == 0 { Thread.sleep(forTimeInterval: 0.1) }
        guard Glibc.kill(pid, 0) == 0 else { return }
        Glibc.kill(pid, SIGKILL)
        for _ in 0..<50 where Glibc.kill(pid, 0) == 0 { Thread.sleep(forTimeInterval: 0.1) }
    }

    /// Kills the daemons in `/tmp/<prefix>…` whose owning process is gone, and removes their directories.
    static func reapOrphans(prefix: String, pidFile: String) {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for entry in entries where entry.hasPrefix(prefix) {
            let root = "/tmp/" + entry
            guard let text = try? String(contentsOfFile: root + "/owner.pid", encoding: .utf8),
                  let owner = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  Glibc.kill(owner, 0) != 0 && errno == ESRCH else { continue }
            kill(pidFile: root + "/" + pidFile)
            try? FileManager.default.removeItem(atPath: root)
        }
    }
}
