import BackfillTestSupport
import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

@Suite("Server restart mid-run")
struct ServerRestartTests {
    @Test("pg_ctl restart -m fast mid-run: the job reconnects, finishes, every row once")
    func restartMidRun() throws {
        let cluster = try LocalPostgres.start()
        defer { cluster.stop() }
        let url = try cluster.createDatabase("restart")
        let db = try Connection(url)
        try seedItems(db, rows: 100_000)
        let job = try jobFile(itemsJob(name: "restart", extra: "throttle: {max_rows_per_second: 30000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "restart") >= 20_000 })
        try cluster.restart()
        let code = runner.wait()
        #expect(code == 0, "\(runner.stderr)")
        let reasons = runner.events.filter { $0["event"] as? String == "retry" }.compactMap { $0["reason"] as? String }
        #expect(reasons.contains("connection_lost"), "\(runner.stderr)")
        try expectExactlyOnce(try Connection(url), rows: 100_000)
    }
}

@Suite("Lock hold bounded by design")
struct LockHoldTests {
    @Test("an immediate stop (a crash) with asynchronous commit, then recovery: the runner carries on, every row exactly once")
    func crashWithAsynchronousCommit() throws {
        let cluster = try LocalPostgres.start(durable: true)
        defer { cluster.stop() }
        let url = try cluster.createDatabase("crash")
        let db = try Connection(url)
        try seedItems(db, rows: 100_000)
        let job = try jobFile(itemsJob(name: "crash", extra: "throttle: {max_rows_per_second: 30000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(try waitFor(30) { rowsDone(db, job: "crash") >= 20_000 })
        try cluster.crashAndRecover()
        #expect(runner.wait() == 0, "\(runner.stderr)")
        try expectExactlyOnce(try Connection(url), rows: 100_000)
    }

    @Test("a runner frozen with SIGSTOP for 10 s under live writers: no live write waits 1 s; continued, it finishes, every row once", .timeLimit(.minutes(3)))
    func frozenRunner() throws {
        let (url, db) = try itemsDatabase("frozen", rows: 200_000)
        let job = try jobFile(itemsJob(name: "frozen", extra: "batch: {size: 5000, target_ms: 200, max: 20000}\nthrottle: {max_rows_per_second: 40000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(try waitFor(30) { rowsDone(db, job: "frozen") >= 20_000 })
        // Live writers: single-row updates of random rows, each timed.
        let stop = Atomic<Bool>(false)
        let worst = Mutex(0.0)
        let writers = (0..<2).map { _ in
            Thread {
                guard let live = try? Connection(url) else { return }
                while !stop.load(ordering: .relaxed) {
                    let started = ContinuousClock.now
                    _ = try? live.query("UPDATE items SET touched = touched + 1 WHERE id = $1", [.int(Int64.random(in: 1...200_000))])
                    let took = ContinuousClock.now - started
                    let ms = Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15
                    worst.withLock { $0 = max($0, ms) }
                }
            }
        }
        // The structure behind it: a batch session never sits idle, waiting for Backfill, while
        // it holds the row-exclusive lock its UPDATE took on the table. pg_stat_activity and
        // pg_locks are not read at one instant (a session idle between two round trips may have
        // taken the lock by the time pg_locks is read), so the locks are read between two
        // readings of the sessions' states, and a session counts only when both readings show it
        // idle in transaction since the same moment: it held the lock while idle.
        let idleWithRowLocks = Mutex(0)
        let monitor = Thread {
            guard let watch = try? Connection(url) else { return }
            func idle() -> Set<String> {
                Set((try? watch.query(
                    """
                    SELECT pid::text || '@' || state_change::text AS id FROM pg_stat_activity
                    WHERE application_name = 'backfill:frozen' AND state = 'idle in transaction'
                    """).rows.compactMap { $0["id"].string }) ?? [])
            }
            while !stop.load(ordering: .relaxed) {
                let before = idle()
                let locked = Set((try? watch.query(
                    "SELECT pid::text AS pid FROM pg_locks WHERE relation = 'items'::regclass AND mode = 'RowExclusiveLock' AND granted"
                ).rows.compactMap { $0["pid"].string }) ?? [])
                let held = before.intersection(idle()).filter { locked.contains(String($0.prefix { $0 != "@" })) }
                idleWithRowLocks.withLock { $0 += held.count }
            }
        }
        writers.forEach { $0.start() }
        monitor.start()
        usleep(300_000)
        kill(runner.pid, SIGSTOP)
        sleep(10)
        kill(runner.pid, SIGCONT)
        #expect(runner.wait() == 0, "\(runner.stderr)")
        stop.store(true, ordering: .relaxed)
        usleep(300_000)
        let worstMs = worst.withLock { $0 }
        #expect(worstMs < 1000, "a live write waited \(worstMs) ms")
        #expect(idleWithRowLocks.withLock { $0 } == 0, "a batch session waited for Backfill while holding the table's row locks")
        try expectExactlyOnce(db, rows: 200_000)
    }
}

@Suite("Watchdog")
struct WatchdogTests {
    @Test("a live session waiting on a batch's locks: the watchdog cancels the batch within blocking_wait_ms + 50 ms; the job finishes, every row once")
    func cancelsForWaiters() throws {
        let (url, db) = try itemsDatabase("watchdog", rows: 6_000)
        try expectWatchdogCancels(job: "watchdog", url: url, direct: url, db: db)
    }

    @Test("through PgBouncer in transaction mode the watchdog watches the server backend that runs the batch, and cancels it for a waiter", .enabled(if: localCluster))
    func cancelsThroughPooler() throws {
        let cluster = try #require(try TestDatabases.localCluster(), "needs the local cluster")
        let bouncer = try LocalPgBouncer(in: cluster, mode: .transaction)
        defer { bouncer.stop() }
        let direct = try cluster.createDatabase("watchdog_pooled")
        let db = try Connection(direct)
        try seedItems(db, rows: 6_000)
        try expectWatchdogCancels(job: "watchdog-pooled", url: bouncer.conninfo(database: "watchdog_pooled"), direct: direct, db: db)
    }

    /// Slow batches (1 ms a row) of 3,000 keys, so that a batch holds its first rows' locks for
    /// seconds; a live update of one of them must not wait much longer than blocking_wait_ms.
    private func expectWatchdogCancels(job name: String, url: String, direct: String, db: Connection, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let job = try jobFile("""
            name: \(name)
            table: items
            key: [id]
            set:
              filled: "id * 2 + (SELECT 0 FROM pg_sleep(0.001 + id * 0))"
              writes: writes + 1
            batch: {size: 3000, min: 100, max: 3000, target_ms: 5000}
            timeouts: {lock_ms: 10000, statement_ms: 60000}
            throttle: {blocking_wait_ms: 150}
            """)
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        // Wait until the first batch has been working for a while (it has locked its first rows).
        #expect(try waitFor(30) {
            (try db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%UPDATE \"items\"%' AND state = 'active' AND now() - query_start > interval '500 milliseconds'").first?["n"].int64 ?? 0) > 0
        }, sourceLocation: sourceLocation)
        let live = try Connection(direct)
        let started = ContinuousClock.now
        try live.query("UPDATE items SET touched = touched + 1 WHERE id = 2")
        let waited = ContinuousClock.now - started
        let waitedMs = Double(waited.components.seconds) * 1000 + Double(waited.components.attoseconds) / 1e15
        #expect(waitedMs < 150 + 50 + 100, "the live update waited \(waitedMs) ms (limit 150 ms + the watchdog's poll + scheduling)", sourceLocation: sourceLocation)
        #expect(runner.wait() == 0, "\(runner.stderr)", sourceLocation: sourceLocation)
        let fired = runner.events.filter { $0["event"] as? String == "throttle" && $0["watchdog"] as? Bool == true }
        #expect(!fired.isEmpty, "no watchdog event: \(runner.stderr)", sourceLocation: sourceLocation)
        print("watchdog (\(name)): the live update waited \(Int(waitedMs)) ms")
        try expectExactlyOnce(db, rows: 6_000, sourceLocation: sourceLocation)
    }
}

@Suite("Replica lag")
struct ReplicaLagTests {
    @Test("a standby whose replay is paused makes the job wait (replication_lag); replay resumed, the job finishes")
    func replicaLag() throws {
        let (primary, standby, url, db) = try primaryWithStandby("lag", rows: 60_000)
        defer { standby.stop(); primary.stop() }
        let replica = try Connection(standby.conninfo())
        try replica.query("SELECT pg_wal_replay_pause()")
        let job = try jobFile(itemsJob(name: "lag", extra: "throttle: {max_replication_lag_ms: 1000, max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) {
            (try? db.query("SELECT throttle_reason FROM backfill.jobs WHERE name = 'lag'").first?["throttle_reason"].string) == "replication_lag"
        }, "\(runner.stderr)")
        let paused = rowsDone(db, job: "lag")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(rowsDone(db, job: "lag") == paused)
        try replica.query("SELECT pg_wal_replay_resume()")
        #expect(runner.wait(timeout: 90) == 0, "\(runner.stderr)")
        let reasons = runner.events.filter { $0["event"] as? String == "throttle" }.compactMap { $0["reason"] as? String }
        #expect(reasons.contains("replication_lag"))
        try expectExactlyOnce(db, rows: 60_000)
    }
}

@Suite("Sessions the server ends")
struct SessionEndTests {
    @Test("a database's idle_session_timeout shorter than the pause between batches ends no session of Backfill's: no reconnect, the job finishes, every row once")
    func idleSessionTimeout() throws {
        let (url, db) = try itemsDatabase("idle", rows: 20_000)
        let name = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        try db.execute("ALTER DATABASE \(Identifier.quote(name)) SET idle_session_timeout = '300ms'")
        // The setting does end an idle session that does not pin it (else this test could not fail).
        let plain = try Connection(url)
        Thread.sleep(forTimeInterval: 0.6)
        #expect(throws: PostgresError.self) { try plain.query("SELECT 1") }
        let job = try jobFile(itemsJob(name: "idle", extra: "batch: {size: 2000, max: 2000, pause_ms: 700}"))
        let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        let retries = run.err.split(separator: "\n").filter { $0.contains("\"event\":\"retry\"") }
        #expect(retries.isEmpty, "\(retries)")
        try expectExactlyOnce(try Connection(url), rows: 20_000)
    }
}
