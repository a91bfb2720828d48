import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

@Suite("Job lifecycle, splits and the store as users meet them")
struct LifecycleTests {
    @Test("cancel, then resume is refused; pause of a done job is refused; forget removes a finished job")
    func commands() throws {
        let (url, db) = try itemsDatabase("lifecycle", rows: 20_000)
        let job = try jobFile(itemsJob(name: "life", extra: "throttle: {max_rows_per_second: 5000}"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(20) { rowsDone(db, job: "life") > 0 })
        #expect(try backfill(["cancel", "life", "--database", url]).code == 0)
        #expect(runner.wait() == 3)
        let resume = try backfill(["resume", "life", "--database", url])
        #expect(resume.code == 2)
        #expect(resume.err.contains("cancelled") && resume.err.contains("--restart"), "\(resume.err)")
        #expect(try backfill(["run", job, "--database", url]).code == 3, "a cancelled job does not run without --restart")
        let restarted = try backfill(["run", job, "--database", url, "--restart"])
        #expect(restarted.code == 0, "\(restarted.err)")
        let pause = try backfill(["pause", "life", "--database", url])
        #expect(pause.code == 2 && pause.err.contains("is done"), "\(pause.err)")
        #expect(try backfill(["forget", "life", "--database", url]).code == 0)
        #expect(try backfill(["status", "life", "--database", url]).code == 2)
        #expect(try backfill(["forget", "nope", "--database", url]).code == 2)
    }

    @Test("--join with --restart is refused")
    func joinRestart() throws {
        let result = try backfill(["run", packageRoot + "/jobs/demo.yaml", "--join", "--restart"])
        #expect(result.code == 2)
        #expect(result.err.contains("--join cannot be combined with --restart"), "\(result.err)")
    }

    @Test("8 workers on a small table, five runs in a row: splits never collide")
    func eightWorkers() throws {
        let (url, db) = try itemsDatabase("eight", rows: 60_000)
        for round in 1...5 {
            let run = try backfill(["run", try jobFile(itemsJob(name: "eight", extra: "batch: {size: 200, max: 2000}")), "--database", url, "--workers", "8", "--restart"])
            #expect(run.code == 0, "round \(round): \(run.err)")
            #expect(!run.err.contains("23505"))
            try db.execute("UPDATE items SET writes = 0, filled = NULL")
        }
    }

    @Test("a role that owns an existing store schema needs no CREATE on the database; an up-to-date store takes no lock at start")
    func leastPrivilege() throws {
        let (url, db) = try itemsDatabase("leastpriv", rows: 5_000)
        let dbname = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        try db.execute("""
            DROP ROLE IF EXISTS bf_\(dbname); CREATE ROLE bf_\(dbname) LOGIN;
            REVOKE CREATE ON DATABASE \(dbname) FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT CONNECT ON DATABASE \(dbname) TO bf_\(dbname);
            GRANT SELECT, UPDATE ON items TO bf_\(dbname);
            CREATE SCHEMA backfill AUTHORIZATION bf_\(dbname);
            """)
        let roleURL = url + " user=bf_\(dbname)"
        let job = try jobFile(itemsJob(name: "least"))
        let first = try backfill(["run", job, "--database", roleURL])
        #expect(first.code == 0, "\(first.err)")
        try expectExactlyOnce(db, rows: 5_000)
        // A reader holding the store's tables: starting again must not wait for a DDL lock.
        let reader = try Connection(url)
        try reader.execute("BEGIN; LOCK TABLE backfill.jobs, backfill.ranges IN ACCESS SHARE MODE")
        let started = Date()
        let again = try backfill(["run", job, "--database", roleURL], timeout: 30)
        #expect(again.code == 0, "\(again.err)")
        #expect(Date().timeIntervalSince(started) < 10)
        try reader.execute("ROLLBACK")
    }

    @Test("a missing privilege is found by validation: exit 2 naming it and the GRANT, nothing recorded")
    func missingPrivileges() throws {
        let (url, db) = try itemsDatabase("privs", rows: 1_000)
        let dbname = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        try db.execute("DROP ROLE IF EXISTS ro_\(dbname); CREATE ROLE ro_\(dbname) LOGIN; GRANT SELECT ON items TO ro_\(dbname); REVOKE CREATE ON DATABASE \(dbname) FROM PUBLIC")
        let roleURL = url + " user=ro_\(dbname)"
        let job = try jobFile(itemsJob(name: "privs"))
        for command in ["plan", "run"] {
            let result = try backfill([command, job, "--database", roleURL])
            #expect(result.code == 2, "\(command): \(result.err)")
            #expect(result.err.contains("lacks UPDATE on column") && result.err.contains("GRANT UPDATE"), "\(command): \(result.err)")
        }
        try db.execute("GRANT UPDATE ON items TO ro_\(dbname)")
        let store = try backfill(["run", job, "--database", roleURL])
        #expect(store.code == 2, "\(store.err)")
        #expect(store.err.contains("cannot create the checkpoint store") && store.err.contains("GRANT CREATE ON DATABASE"), "\(store.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true)
    }

    @Test("a schema holding tables Backfill did not create is refused")
    func foreignSchema() throws {
        let (url, db) = try itemsDatabase("foreign", rows: 100)
        try db.execute("CREATE SCHEMA backfill; CREATE TABLE backfill.other (x int)")
        let run = try backfill(["run", try jobFile(itemsJob(name: "f")), "--database", url])
        #expect(run.code == 2)
        #expect(run.err.contains("did not create"), "\(run.err)")
    }
}

@Suite("Finishing for sure: catch-up passes and repeating jobs")
struct PassTests {
    @Test("rows that match `where` again behind the walk get a catch-up pass; the run exits 0")
    func catchUp() throws {
        let (url, db) = try itemsDatabase("catchup", rows: 20_000)
        let spec = try JobSpec.parse(yaml: itemsJob(name: "catch", extra: "where: filled IS NULL\nbatch: {size: 1000, max: 1000}"), file: "c.yaml")
        let reset = Once()
        let log = EventLog()
        let outcome = Runner(spec: spec, options: RunOptions(database: url)) { event in
            log.append(event)
            // Once the walk is past key 5000, an application sets row 10 back to NULL.
            if event.kind == .batch, case .strings(let key) = event["last_key"], Int(key.first ?? "") ?? 0 > 5000, reset.first() {
                try? Connection(url).execute("UPDATE items SET filled = NULL WHERE id = 10")
            }
        }.run()
        #expect(outcome.exitCode == 0, "\(outcome)")
        let passes = log.events.filter { $0.kind == .pass }
        #expect(passes.count == 1)
        #expect(passes.first?["remaining"] == .int(1))
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled IS NULL").first?["n"].int64 == 0)
        #expect(try db.query("SELECT writes FROM items WHERE id = 10").first?["writes"].int64 == 2)
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes = 1").first?["n"].int64 == 19_999)
        #expect(try CheckpointStore().status(job: "catch", db: db).first?.pass == 2)
    }

    @Test("rows that keep matching fail after catch_up_passes with the count")
    func catchUpGivesUp() throws {
        let (url, _) = try itemsDatabase("giveup", rows: 3_000)
        // A `set` that leaves every row matching: no number of passes helps.
        let (outcome, events) = try runJob("name: g\ntable: items\nkey: [id]\nwhere: touched >= 0\nset: {touched: touched + 1}\ncatch_up_passes: 2\n", url: url)
        #expect(outcome.exitCode == 1)
        #expect(events.filter { $0.kind == .pass }.count == 2)
        guard case .failed(let failure, _) = outcome else { return }
        #expect(failure.message.contains("2 catch-up passes") && failure.message.contains("still match"), "\(failure)")
    }

    @Test("the nightly purge recipe: two nights in a row exit 0 and leave no expired row")
    func nightlyPurge() throws {
        let url = try TestDatabases.create("purge")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE sessions (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
            INSERT INTO sessions SELECT g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 30000) g;
            ANALYZE sessions;
            """)
        let job = packageRoot + "/jobs/sessions-purge-expired.yaml"
        let expired = "SELECT count(*) AS n FROM sessions WHERE expires_at < now() - interval '30 days'"
        // Night 1: once the walk is past key 20,000, sessions with small keys expire behind it.
        let expiredBehind = Once()
        let night1 = Runner(spec: try JobSpec.load(path: job), options: RunOptions(database: url)) { event in
            if event.kind == .batch, case .strings(let key) = event["last_key"], Int(key.first ?? "") ?? 0 > 20_000, expiredBehind.first() {
                try? Connection(url).execute("UPDATE sessions SET expires_at = now() - interval '45 days' WHERE id < 100 AND expires_at > now() - interval '30 days'")
            }
        }.run()
        #expect(night1.exitCode == 0, "\(night1)")
        #expect(!expiredBehind.first(), "the walk never passed key 20,000")
        #expect(try db.query(expired).first?["n"].int64 ?? 0 > 0, "rows expired behind the walk are left for the next night")
        // Night 2 (the next day): more sessions have expired; the job starts a new pass.
        try db.execute("UPDATE sessions SET expires_at = now() - interval '31 days' WHERE id % 7 = 0")
        #expect(try db.query(expired).first?["n"].int64 ?? 0 > 0)
        let night2 = try backfill(["run", job, "--database", url])
        #expect(night2.code == 0, "\(night2.err)")
        #expect(try db.query(expired).first?["n"].int64 == 0)
        let status = try backfill(["status", "sessions-purge-expired", "--database", url, "--format", "json"]).out
        #expect(status.contains("\"pass\":2") && status.contains("\"state\":\"done\""), "\(status)")
    }
}

import Synchronization

@Suite("Bounded memory")
struct MemoryTests {
    /// Peak resident memory of a running process, from /proc (VmHWM), in kB.
    static func peakKB(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    @Test("a 3M-row table that was never analyzed: splitting it into ranges reads a bounded sample", .timeLimit(.minutes(5)))
    func unanalyzedTable() throws {
        let url = try TestDatabases.create("memory")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE big (id bigint PRIMARY KEY, v int) WITH (autovacuum_enabled = false);
            INSERT INTO big SELECT g, 0 FROM generate_series(1, 3000000) g;
            """)
        #expect(try db.query("SELECT reltuples < 0 AS never FROM pg_class WHERE relname = 'big'").first?["never"].bool == true)
        let job = try jobFile("name: big\ntable: big\nkey: [id]\nset: {v: 1}\n")
        let run = try CLIProcess(["run", job, "--database", url, "--workers", "2", "--max-runtime", "2s"])
        var peak = 0
        while run.process.isRunning {
            if let kb = Self.peakKB(run.pid) { peak = max(peak, kb) }
            usleep(20_000)
        }
        #expect([0, 3].contains(run.wait()), "\(run.stderr)")
        let ranges = try db.query("SELECT count(*) AS n FROM backfill.ranges WHERE job = 'big'").first?["n"].int64 ?? 0
        #expect(ranges >= 8, "the key space was split into \(ranges) ranges")
        #expect(peak > 0 && peak < 150_000, "peak resident memory \(peak) kB")
    }
}
