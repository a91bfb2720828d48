import BackfillCore
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

    @Test("a schema holding tables Backfill did not create is refused")
    func foreignSchema() throws {
        let (url, db) = try itemsDatabase("foreign", rows: 100)
        try db.execute("CREATE SCHEMA backfill; CREATE TABLE backfill.other (x int)")
        let run = try backfill(["run", try jobFile(itemsJob(name: "f")), "--database", url])
        #expect(run.code == 2)
        #expect(run.err.contains("did not create"), "\(run.err)")
    }
}
