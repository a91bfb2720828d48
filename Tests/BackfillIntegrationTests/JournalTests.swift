import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// `journal: true` and `backfill revert` against real PostgreSQL. 100k rows (not the issue's
/// 300k, to keep the suite's time down: the batches are the same, only fewer).
@Suite("Journal and revert")
struct JournalTests {
    static func checksum(_ db: Connection, _ table: String = "items") throws -> String {
        try db.query("SELECT md5(string_agg(t::text, ',' ORDER BY id)) AS sum FROM \(table) t").first?["sum"].string ?? ""
    }

    static func count(_ db: Connection, _ sql: String) throws -> Int64 { try db.query(sql).first?["n"].int64 ?? -1 }

    @Test("fill with a journal; the application changes 100 rows; revert (killed with -9 after its first batch, run again): every other row has its old value, the 100 keep theirs and are counted")
    func fillAndRevert() throws {
        let rows = 100_000
        let (url, db) = try itemsDatabase("journal", rows: rows)
        try db.execute("UPDATE items SET filled = 7 WHERE id % 10 = 0")  // some rows hold a value before the job
        let before = try Self.checksum(db)
        let job = try jobFile(itemsJob(name: "journal", extra: "journal: true\nbatch: {size: 1000, max: 2000}\nthrottle: {max_rows_per_second: 40000}"))
        let plan = try backfill(["plan", job, "--database", url])
        #expect(plan.out.contains("journal:    on"), "\(plan.out)\(plan.err)")
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 0, "\(run.err)")
        #expect(try Self.count(db, "SELECT count(*) AS n FROM backfill.journal WHERE job = 'journal'") == Int64(rows))
        // The application changes 100 filled rows.
        try db.execute("UPDATE items SET filled = -1 WHERE id % 1000 = 3")
        let changed = try Self.checksum(db)

        let dry = try backfill(["revert", job, "--database", url, "--dry-run"])
        #expect(dry.code == 1, "\(dry.out)\(dry.err)")
        #expect(dry.out.contains("would restore 99900 rows") && dry.out.contains("100 rows would be left"), "\(dry.out)")
        #expect(try Self.checksum(db) == changed, "a dry run changed nothing")
        #expect(try Self.count(db, "SELECT count(*) AS n FROM backfill.revert_conflicts") == 0)

        let first = try CLIProcess(["revert", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { first.events.contains { $0["event"] as? String == "batch" && $0["revert"] as? Bool == true } }, "\(first.stderr)")
        kill(first.pid, SIGKILL)
        first.wait()
        let state = try db.query("SELECT state, revert_restored FROM backfill.jobs WHERE name = 'journal'").first
        #expect(state?["state"].string == "reverting")
        #expect((state?["revert_restored"].int64 ?? 0) < 99_900, "the kill came before the end")

        let second = try backfill(["revert", job, "--database", url])
        #expect(second.code == 1, "\(second.out)\(second.err)")
        #expect(second.out.contains("restored 99900 rows") && second.out.contains("100 rows were left") && second.out.contains("--conflicts"), "\(second.out)")
        #expect(try Self.count(db, "SELECT count(*) AS n FROM items WHERE id % 1000 = 3 AND filled = -1 AND writes = 1") == 100)
        #expect(try Self.count(db, "SELECT count(*) AS n FROM items WHERE id % 1000 <> 3 AND writes = 0 AND filled IS NOT DISTINCT FROM CASE WHEN id % 10 = 0 THEN 7 END") == Int64(rows - 100))
        try db.execute("UPDATE items SET filled = CASE WHEN id % 10 = 0 THEN 7 END, writes = 0 WHERE id % 1000 = 3")
        #expect(try Self.checksum(db) == before, "every row is as it was before the job, once the 100 are put back by hand")
        #expect(try db.query("SELECT state FROM backfill.jobs WHERE name = 'journal'").first?["state"].string == "reverted")

        let listed = try backfill(["revert", job, "--database", url, "--conflicts", "--format", "json"])
        #expect(listed.code == 0, "\(listed.err)")
        #expect(listed.out.components(separatedBy: "\"pass\"").count - 1 == 100, "\(listed.out)")
        let status = try backfill(["status", "journal", "--database", url])
        #expect(status.out.contains("reverted") && status.out.contains("revert: 99900 rows restored, 100 left"), "\(status.out)")
        let again = try backfill(["revert", job, "--database", url])
        #expect(again.code == 1 && again.out.contains("already reverted"), "\(again.out)\(again.err)")
        let rerun = try backfill(["run", job, "--database", url])
        #expect(rerun.code == 2 && rerun.err.contains("reverted"), "\(rerun.err)")
        let forget = try backfill(["forget", "journal", "--database", url])
        #expect(forget.code == 0, "\(forget.err)")
        #expect(try Self.count(db, "SELECT count(*) AS n FROM backfill.journal WHERE job = 'journal'") == 0)
    }

    @Test("a job with `repeat` journals each pass; revert undoes the newest pass first, then the older ones")
    func repeatPasses() throws {
        let (url, db) = try itemsDatabase("journal-repeat", rows: 5_000)
        let before = try Self.checksum(db)
        // Batches larger than a pass: a revert batch must still put each key back newest pass first.
        let job = try jobFile(itemsJob(name: "nightly", extra: "journal: true\nrepeat: true\nbatch: {size: 8000, min: 8000, max: 8000}"))
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        #expect(try Self.count(db, "SELECT count(*) AS n FROM items WHERE writes = 2") == 5_000)
        #expect(try Self.count(db, "SELECT count(DISTINCT pass) AS n FROM backfill.journal WHERE job = 'nightly'") == 2)
        let revert = try backfill(["revert", job, "--database", url])
        #expect(revert.code == 0 && revert.out.contains("restored 10000 rows"), "\(revert.out)\(revert.err)")
        #expect(try Self.checksum(db) == before)
    }

    @Test("a batched delete with a journal, reverted: the rows are back byte for byte; varied types, an identity column")
    func deleteReverted() throws {
        let url = try TestDatabases.create("journal-delete")
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE things (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n numeric, t timestamptz, j jsonb, b bytea, a text[], f float8, s text,
                                 twice bigint GENERATED ALWAYS AS (id * 2) STORED);
            INSERT INTO things (n, t, j, b, a, f, s)
            SELECT g / 7.0, '2020-01-01 00:00:00.123456+00'::timestamptz + g * interval '1 hour', jsonb_build_object('g', g, 'x', array[g, -g]),
                   decode(md5(g::text), 'hex'), array[g::text, NULL, 'a,b'], CASE WHEN g % 5 = 0 THEN NULL ELSE 1.0 / g END, CASE WHEN g % 4 = 0 THEN NULL ELSE 'é ' || g END
            FROM generate_series(1, 6000) g;
            ANALYZE things;
            """)
        let before = try Self.checksum(db, "things")
        let job = try jobFile("name: purge\ntable: things\nkey: [id]\naction: delete\nwhere: id % 3 <> 0\njournal: true\nbatch: {size: 500}\n")
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        #expect(try Self.count(db, "SELECT count(*) AS n FROM things") == 2000)
        let revert = try backfill(["revert", job, "--database", url])
        #expect(revert.code == 0, "\(revert.out)\(revert.err)")
        #expect(revert.out.contains("restored 4000 rows"), "\(revert.out)")
        #expect(try Self.checksum(db, "things") == before)
    }

    @Test("revert refuses (exit 2) a running job and a job without a journal, changing nothing")
    func refusals() throws {
        let (url, db) = try itemsDatabase("journal-refuse", rows: 30_000)
        let job = try jobFile(itemsJob(name: "refuse", extra: "journal: true\nbatch: {size: 500, max: 500}\nthrottle: {max_rows_per_second: 5000}"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(20) { rowsDone(db, job: "refuse") > 0 })
        let running = try backfill(["revert", job, "--database", url])
        #expect(running.code == 2 && running.err.contains("running"), "\(running.err)")
        kill(runner.pid, SIGTERM)
        #expect(runner.wait() == 3)
        let plain = try jobFile(itemsJob(name: "plain"))
        #expect(try backfill(["run", plain, "--database", url, "--max-runtime", "1s"]).code != 2)
        let noJournal = try backfill(["revert", plain, "--database", url])
        #expect(noJournal.code == 2 && noJournal.err.contains("no journal"), "\(noJournal.err)")
    }

    @Test("a journal survives a crash (pg_ctl stop -m immediate) exactly with its batches: journal rows == rows done, each key once")
    func journalSurvivesCrash() throws {
        let cluster = try LocalPostgres.start(durable: true)
        defer { cluster.stop() }
        let url = try cluster.createDatabase("journalcrash")
        let db = try Connection(url)
        try seedItems(db, rows: 100_000)
        let job = try jobFile(itemsJob(name: "jcrash", extra: "journal: true\nthrottle: {max_rows_per_second: 30000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "jcrash") >= 20_000 })
        try cluster.crashAndRecover()
        #expect(runner.wait() == 0, "\(runner.stderr)")
        let after = try Connection(url)
        try expectExactlyOnce(after, rows: 100_000)
        let row = try after.query(
            """
            SELECT (SELECT count(*) FROM backfill.journal WHERE job = 'jcrash') AS journal, (SELECT count(DISTINCT key) FROM backfill.journal WHERE job = 'jcrash') AS keys,
                   (SELECT sum(rows_done) FROM backfill.ranges WHERE job = 'jcrash')::bigint AS done
            """).first
        #expect(row?["journal"].int64 == 100_000 && row?["keys"].int64 == 100_000 && row?["done"].int64 == 100_000, "\(String(describing: row))")
    }
}
