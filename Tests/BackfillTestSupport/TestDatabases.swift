import Foundation
import LocalPostgres
import PostgresClient
import Synchronization

/// Fresh databases for tests: one per test, on the server named by `BACKFILL_TEST_DATABASE_URL`,
/// or else on one `LocalPostgres` cluster shared by the whole test process.
public enum TestDatabases {
    /// The environment variable naming an existing server to test against.
    public static let environmentVariable = "BACKFILL_TEST_DATABASE_URL"

    private static let shared = Mutex<Result<LocalPostgres, LocalPostgres.Failure>?>(nil)
    private static let counter = Atomic<Int>(0)

    /// The connection string of the server tests use (its maintenance database).
    public static func serverConninfo() throws -> String {
        if let url = ProcessInfo.processInfo.environment[environmentVariable], !url.isEmpty { return url }
        return try cluster().conninfo()
    }

    /// The shared local cluster, started on first use; nil when an external server is configured.
    public static func localCluster() throws -> LocalPostgres? {
        if let url = ProcessInfo.processInfo.environment[environmentVariable], !url.isEmpty { return nil }
        return try cluster()
    }

    private static func cluster() throws -> LocalPostgres {
        let result = shared.withLock { state -> Result<LocalPostgres, LocalPostgres.Failure> in
            if let state { return state }
            let started: Result<LocalPostgres, LocalPostgres.Failure>
            do {
                started = .success(try LocalPostgres.start())
            } catch let failure as LocalPostgres.Failure {
                started = .failure(failure)
            } catch {
                started = .failure(LocalPostgres.Failure(description: "\(error)"))
            }
            state = started
            return started
        }
        return try result.get()
    }

    /// Creates a new, empty database named after `label` and returns a connection string for it.
    public static func create(_ label: String = "test") throws -> String {
        let base = try serverConninfo()
        let safe = label.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let name = "t_\(String(safe).prefix(40))_\(getpid())_\(counter.add(1, ordering: .relaxed).newValue)"
        let admin = try Connection(base, applicationName: "backfill-tests")
        try admin.execute("CREATE DATABASE \(Identifier.quote(name))")
        return replacingDatabase(in: base, with: name)
    }

    /// A keyword connection string equal to `conninfo` but for database `name`.
    public static func replacingDatabase(in conninfo: String, with name: String) -> String {
        var settings = ConnectionInfo.parse(conninfo)
        settings["dbname"] = name
        return settings.sorted { $0.key < $1.key }.map { key, value in
            "\(key)='\(value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'"))'"
        }.joined(separator: " ")
    }
}
