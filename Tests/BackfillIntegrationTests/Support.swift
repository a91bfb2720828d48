import BackfillCore
import BackfillTestSupport
import Foundation
import Synchronization
import LocalPostgres
import PostgresClient
import Testing

/// The `backfill` executable built next to the test bundle.
let backfillExecutable: String = {
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("backfill").path
}()

/// The package's root folder (for `jobs/`).
let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A run of the CLI as a child process.
final class CLIProcess: @unchecked Sendable {
    let process = Process()
    let outPath = NSTemporaryDirectory() + "backfill-out-\(UUID().uuidString)"
    let errPath = NSTemporaryDirectory() + "backfill-err-\(UUID().uuidString)"

    init(_ arguments: [String], environment: [String: String] = [:], executable: String = backfillExecutable) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        // The run's settings come from the test alone, not from the shell that started the tests.
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            key == TestDatabases.environmentVariable || (key != "DATABASE_URL" && !key.hasPrefix("BACKFILL_"))
        }
        for (k, v) in environment { env[k] = v }
        process.environment = env
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits for the exit code (at most `timeout` seconds, then kills the process).
    @discardableResult
    func wait(timeout: Double = 240) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            Issue.record("backfill \(process.arguments ?? []) did not finish in \(timeout) s")
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// The JSON events written with `--log-format json`.
    var events: [[String: Any]] {
        stderr.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL) }
        unlink(outPath)
        unlink(errPath)
    }
}

/// A finished run of the CLI: exit code, stdout, stderr, and the JSON events on stderr.
typealias CLIRun = (code: Int32, out: String, err: String, events: [[String: Any]])

/// Runs the CLI to completion, with `environment` added to this process's.
func backfill(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 240) throws -> CLIRun {
    let p = try CLIProcess(arguments, environment: environment)
    let code = p.wait(timeout: timeout)
    return (code, p.stdout, p.stderr, p.events)
}

/// Writes a job file to a temporary path.
func jobFile(_ yaml: String) throws -> String {
    let path = NSTemporaryDirectory() + "backfill-job-\(UUID().uuidString).yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// `items(id bigint primary key, payload text, filled bigint, writes int)`, `rows` rows.
/// A job that sets `writes = writes + 1` without a `where` shows every row was written exactly once.
func seedItems(_ db: Connection, rows: Int, table: String = "items") throws {
    try db.execute(
        """
        CREATE TABLE \(table) (id bigint PRIMARY KEY, payload text NOT NULL, filled bigint, writes int NOT NULL DEFAULT 0, touched int NOT NULL DEFAULT 0);
        INSERT INTO \(table) (id, payload) SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, \(rows)) g;
        ANALYZE \(table);
        """)
}

/// A throwaway primary whose database `name` holds `items` with `rows` rows, and a standby
/// streaming from it. Stop the standby first.
func primaryWithStandby(_ name: String, rows: Int) throws -> (primary: LocalPostgres, standby: LocalPostgres, url: String, db: Connection) {
    let primary = try LocalPostgres.start()
    let url = try primary.createDatabase(name)
    let db = try Connection(url)
    try seedItems(db, rows: rows)
    let standby = try primary.startStandby()
    #expect(waitFor(20) {
        (try? db.query("SELECT count(*) AS n FROM pg_stat_replication WHERE state = 'streaming'").first?["n"].int64) == 1
    })
    return (primary, standby, url, db)
}

/// A new database holding `items` with `rows` rows, and a connection to it.
func itemsDatabase(_ label: String, rows: Int) throws -> (url: String, db: Connection) {
    let url = try TestDatabases.create(label)
    let db = try Connection(url)
    try seedItems(db, rows: rows)
    return (url, db)
}

/// The job that fills `items.filled` and counts writes.
func itemsJob(name: String, table: String = "items", extra: String = "") -> String {
    """
    name: \(name)
    table: \(table)
    key: [id]
    set:
      filled: id * 2
      writes: writes + 1
    \(extra)
    """
}

/// Asserts every row of `items` was written exactly once and filled right.
func expectExactlyOnce(_ db: Connection, rows: Int, table: String = "items", sourceLocation: SourceLocation = #_sourceLocation) throws {
    let row = try #require(try db.query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE writes = 1) AS once, count(*) FILTER (WHERE filled = id * 2) AS right, max(writes) AS most FROM \(table)"
    ).first, sourceLocation: sourceLocation)
    #expect(row["n"].int64 == Int64(rows), sourceLocation: sourceLocation)
    #expect(row["once"].int64 == Int64(rows), "max writes per row: \(row["most"])", sourceLocation: sourceLocation)
    #expect(row["right"].int64 == Int64(rows), sourceLocation: sourceLocation)
}

/// A `sql` action over the 2,000 rows of `items` while the application changes row 500
/// (`filled = -1`) in a transaction (opened with `begin`) that commits while the job's batch waits
/// for the row: the batch must see that the row no longer matches `where`, and leave it.
func expectSQLActionKeepsApplicationWrite(url: String, db: Connection, begin: String = "BEGIN", sourceLocation: SourceLocation = #_sourceLocation) throws {
    let app = try Connection(url)
    try app.execute(begin)
    try app.query("UPDATE items SET filled = -1 WHERE id = 500")
    let path = try jobFile("""
        name: s
        table: items
        key: [id]
        where: filled IS NULL
        sql: UPDATE items SET filled = items.id * 2, writes = writes + 1 FROM batch WHERE items.id = batch.id
        batch: {size: 5000, max: 5000}
        timeouts: {lock_ms: 20000, statement_ms: 30000}
        """)
    let run = try CLIProcess(["run", path, "--database", url])
    #expect(try waitFor(20) { (try db.query("SELECT count(*) AS n FROM pg_locks WHERE NOT granted").first?["n"].int64 ?? 0) > 0 },
            "the batch never waited on the application's row", sourceLocation: sourceLocation)
    try app.execute("COMMIT")
    #expect(run.wait() == 0, "\(run.stderr)", sourceLocation: sourceLocation)
    let row = try #require(try db.query("SELECT filled, writes FROM items WHERE id = 500").first, sourceLocation: sourceLocation)
    #expect(row["filled"].int64 == -1, "the application's write was overwritten", sourceLocation: sourceLocation)
    #expect(row["writes"].int64 == 0, sourceLocation: sourceLocation)
    #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled = id * 2 AND writes = 1").first?["n"].int64 == 1_999, sourceLocation: sourceLocation)
}

/// Polls until `condition` holds or `timeout` passes.
func waitFor(_ timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return false
}

/// Rows done so far according to the checkpoint store.
func rowsDone(_ db: Connection, job: String) -> Int64 {
    (try? db.query("SELECT coalesce(sum(rows_done), 0)::bigint AS n FROM backfill.ranges WHERE job = $1", [.text(job)]).first?["n"].int64) ?? 0
}

/// Run events collected from the worker threads that emit them.
final class EventLog: Sendable {
    private let list = Mutex<[RunEvent]>([])
    func append(_ event: RunEvent) { list.withLock { $0.append(event) } }
    var events: [RunEvent] { list.withLock { $0 } }
}

/// True the first time it is asked, from whichever thread, and false after.
final class Once: Sendable {
    private let done = Mutex(false)
    func first() -> Bool { done.withLock { let first = !$0; $0 = true; return first } }
}

