import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// PgBouncer runs in front of the local cluster the tests start; not against an external server.
let localCluster = (ProcessInfo.processInfo.environment[TestDatabases.environmentVariable] ?? "").isEmpty

/// A PgBouncer in `mode` in front of the local cluster, and a new database there with 100,000
/// `items`: the direct and the pooled connection strings, and a direct connection.
private func pooledItems(_ mode: LocalPgBouncer.PoolMode, database: String) throws -> (LocalPgBouncer, direct: String, pooled: String, db: Connection) {
    let cluster = try #require(try TestDatabases.localCluster(), "needs the local cluster")
    let bouncer = try LocalPgBouncer(in: cluster, mode: mode)
    let direct = try cluster.createDatabase(database)
    let db = try Connection(direct)
    try seedItems(db, rows: 100_000)
    return (bouncer, direct, bouncer.conninfo(database: database), db)
}

@Suite("The lease: lost sessions, unlock, poolers")
struct LeaseTests {
    @Test("pg_terminate_backend on the lease session: the runner stops within a few seconds (exit 3, lease lost); the next run finishes")
    func terminatedLeaseSession() throws {
        let (url, db) = try itemsDatabase("leasekill", rows: 200_000)
        let job = try jobFile(itemsJob(name: "leasekill", extra: "throttle: {max_rows_per_second: 20000}\nworkers: 2"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "leasekill") > 0 })
        let killed = try db.query(
            """
            WITH lease AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'backfill:leasekill:lease')
            SELECT count(*)::int AS n FROM lease WHERE pg_terminate_backend(pid)
            """).first?["n"].int
        #expect(killed == 1)
        let started = Date()
        #expect(runner.wait(timeout: 30) == 3, "\(runner.stderr)")
        #expect(Date().timeIntervalSince(started) < 6)
        #expect(runner.stderr.contains("lease lost"), "\(runner.stderr)")
        let again = try backfill(["run", job, "--database", url])
        #expect(again.code == 0, "\(again.err)")
        try expectExactlyOnce(db, rows: 200_000)
    }

    @Test("unlock refuses a live holder (exit 4); on a SIGSTOPped runner it frees the job; the runner, continued, stops without writing a batch")
    func unlockFrozenRunner() throws {
        let (url, db) = try itemsDatabase("frozen", rows: 150_000)
        let job = try jobFile(itemsJob(name: "frozen", extra: "throttle: {max_rows_per_second: 20000}\nworkers: 2"))
        let frozen = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "frozen") > 0 })
        let fresh = try backfill(["unlock", "frozen", "--database", url])
        #expect(fresh.code == 4, "\(fresh.err)")
        #expect(fresh.err.contains("the holder is alive"), "\(fresh.err)")

        kill(frozen.pid, SIGSTOP)
        defer { kill(frozen.pid, SIGKILL) }
        let refused = try backfill(["run", job, "--database", url])
        #expect(refused.code == 4, "\(refused.err)")
        Thread.sleep(forTimeInterval: 2.5)
        let unlocked = try backfill(["unlock", "frozen", "--database", url, "--stale-after", "2s"])
        #expect(unlocked.code == 0, "\(unlocked.err)")
        #expect(unlocked.out.contains("unlocked: terminated backend pid"), "\(unlocked.out)")

        let second = try backfill(["run", job, "--database", url])
        #expect(second.code == 0, "\(second.err)")
        try expectExactlyOnce(db, rows: 150_000)
        let batches = try db.query("SELECT sum(batches)::bigint AS n FROM backfill.ranges WHERE job = 'frozen'").first?["n"].int64

        kill(frozen.pid, SIGCONT)
        #expect(frozen.wait(timeout: 20) == 3, "\(frozen.stderr)")
        #expect(frozen.stderr.contains("lease lost"), "\(frozen.stderr)")
        #expect(try db.query("SELECT sum(batches)::bigint AS n FROM backfill.ranges WHERE job = 'frozen'").first?["n"].int64 == batches)
        try expectExactlyOnce(db, rows: 150_000)
        let nothing = try backfill(["unlock", "frozen", "--database", url])
        #expect(nothing.code == 0 && nothing.out.contains("nothing to unlock"), "\(nothing.out) \(nothing.err)")
    }

    @Test("a job started over with a changed file is not fed by a joined process of the old one: it stops (exit 3); every row gets the new file's value")
    func specHashOnClaims() throws {
        let (url, db) = try itemsDatabase("respec", rows: 100_000)
        let old = try jobFile(itemsJob(name: "respec", extra: "throttle: {max_rows_per_second: 10000}"))
        let holder = try CLIProcess(["run", old, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "respec") > 0 })
        let joined = try CLIProcess(["run", old, "--database", url, "--join"])
        Thread.sleep(forTimeInterval: 1)
        kill(holder.pid, SIGTERM)
        #expect(holder.wait(timeout: 10) == 3, "\(holder.stderr)")
        let new = try jobFile(itemsJob(name: "respec").replacingOccurrences(of: "id * 2", with: "id * 3"))
        let restarted = try backfill(["run", new, "--database", url, "--restart"])
        #expect(restarted.code == 0, "\(restarted.err)")
        #expect(joined.wait(timeout: 30) == 3, "\(joined.stderr)")
        #expect(joined.stderr.contains("started over with a different job file"), "\(joined.stderr)")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled = id * 3").first?["n"].int64 == 100_000)
    }

    @Test("through PgBouncer in session mode: a second runner exits 4; the job finishes exactly once", .enabled(if: localCluster))
    func pgbouncerSession() throws {
        let (bouncer, _, pooled, db) = try pooledItems(.session, database: "bouncer_session")
        defer { bouncer.stop() }
        let job = try jobFile(itemsJob(name: "bsession", extra: "throttle: {max_rows_per_second: 25000}\nworkers: 2"))
        let first = try CLIProcess(["run", job, "--database", pooled])
        #expect(waitFor(30) { rowsDone(db, job: "bsession") > 0 }, "\(first.stderr)")
        let second = try backfill(["run", job, "--database", pooled])
        #expect(second.code == 4, "\(second.err)")
        #expect(second.err.contains("another runner holds this job"), "\(second.err)")
        #expect(first.wait(timeout: 60) == 0, "\(first.stderr)")
        try expectExactlyOnce(db, rows: 100_000)
    }

    @Test("through PgBouncer in transaction mode: the job finishes exactly once, and a direct run after it is not refused by a leaked lock", .enabled(if: localCluster))
    func pgbouncerTransaction() throws {
        let (bouncer, direct, pooled, db) = try pooledItems(.transaction, database: "bouncer_txn")
        defer { bouncer.stop() }
        let job = try jobFile(itemsJob(name: "btxn", extra: "workers: 2"))
        let through = try backfill(["run", job, "--database", pooled])
        #expect(through.code == 0, "\(through.err)")
        try expectExactlyOnce(db, rows: 100_000)
        // The pooler keeps its server connections; none of them may hold the job's lease.
        try db.execute("UPDATE items SET filled = NULL, writes = 0")
        let after = try backfill(["run", job, "--database", direct, "--restart"])
        #expect(after.code == 0, "\(after.err)")
        try expectExactlyOnce(db, rows: 100_000)
    }
}
