import BackfillCore
import BackfillTestSupport
import Foundation
import PostgresClient
import Testing

/// Rows that cannot be written (`on_error`): quarantined with `skip`, named with `stop`.
@Suite("Bad rows: quarantined on request, named when the job stops")
struct BadRowsTests {
    /// `items` whose `payload` is the id as text, except for `bad` ids, whose payload is not a
    /// number: a job that sets `filled = payload::bigint * 2` fails on them with 22P02.
    func badItems(_ label: String, rows: Int, bad: [Int64]) throws -> (url: String, db: Connection) {
        let (url, db) = try itemsDatabase(label, rows: rows)
        try db.execute("UPDATE items SET payload = id::text")
        try db.query("UPDATE items SET payload = 'n/a:' || id WHERE id = ANY ($1::bigint[])", [.text("{" + bad.map(String.init).joined(separator: ",") + "}")])
        try db.execute("VACUUM ANALYZE items")
        return (url, db)
    }

    func castJob(_ name: String, _ extra: String) -> String {
        """
        name: \(name)
        table: items
        key: [id]
        where: filled IS NULL
        set:
          filled: payload::bigint * 2
          writes: writes + 1
        \(extra)
        """
    }

    /// Every good row written exactly once and filled right; the bad ones not written at all.
    func expectGoodRowsOnce(_ db: Connection, rows: Int, bad: Set<Int64>, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let list = "{" + bad.map(String.init).joined(separator: ",") + "}"
        let row = try #require(try db.query(
            """
            SELECT count(*) FILTER (WHERE writes = 1 AND filled = id * 2 AND id <> ALL ($1::bigint[])) AS good,
                   count(*) FILTER (WHERE writes = 0 AND filled IS NULL AND id = ANY ($1::bigint[])) AS untouched,
                   max(writes) AS most
            FROM items
            """, [.text(list)]).first, sourceLocation: sourceLocation)
        #expect(row["good"].int64 == Int64(rows - bad.count), "max writes per row: \(row["most"])", sourceLocation: sourceLocation)
        #expect(row["untouched"].int64 == Int64(bad.count), sourceLocation: sourceLocation)
    }

    func badRowsJSON(_ job: String, _ url: String) throws -> [[String: Any]] {
        let listed = try backfill(["bad-rows", job, "--database", url, "--format", "json"])
        #expect(listed.code == 0, "\(listed.err)")
        return try #require(try JSONSerialization.jsonObject(with: Data(listed.out.utf8)) as? [[String: Any]])
    }

    static let scattered: [Int64] = [3, 4_999, 12_345, 20_000, 33_333, 41_000, 49_998]

    @Test("skip: 7 malformed rows of 50k are quarantined, every other row written once; exit 1 `done with 7 bad rows`, or 0 with exit_zero")
    func skipQuarantines() throws {
        let bad = Self.scattered
        let (url, db) = try badItems("badskip", rows: 50_000, bad: bad)
        let job = try jobFile(castJob("badskip", "on_error: {action: skip}"))
        let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(run.code == 1, "\(run.err)")
        try expectGoodRowsOnce(db, rows: 50_000, bad: Set(bad))

        let done = try #require(run.events.last)
        #expect(done["event"] as? String == "done" && done["bad_rows"] as? Int == 7 && done["exit_code"] as? Int == 1, "\(done)")
        #expect((done["next"] as? String)?.contains("backfill bad-rows badskip") == true)
        let events = run.events.filter { $0["event"] as? String == "bad_row" }
        #expect(events.compactMap { $0["key"] as? [String] }.sorted { Int64($0[0])! < Int64($1[0])! } == bad.map { [String($0)] })
        #expect(events.allSatisfy { $0["sqlstate"] as? String == "22P02" })

        let listed = try badRowsJSON("badskip", url)
        #expect(listed.compactMap { $0["key"] as? [String] }.map { Int64($0[0])! }.sorted() == bad)
        #expect(listed.allSatisfy { $0["sqlstate"] as? String == "22P02" && ($0["message"] as? String)?.contains("invalid input syntax") == true
                && $0["detected_at"] is String && $0["pass"] as? Int == 1 })

        // The text summary and next line, and status, say the same (a rerun of the finished job).
        let again = try backfill(["run", job, "--database", url])
        #expect(again.code == 1)
        #expect(again.err.contains("done with 7 bad rows") && again.err.contains("next: `backfill bad-rows badskip`"), "\(again.err)")
        let status = try backfill(["status", "badskip", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"bad_rows\":7") && status.out.contains("\"state\":\"done\""), "\(status.out)")
        #expect(try backfill(["status", "badskip", "--database", url]).out.contains("7 bad rows (`backfill bad-rows badskip`)"))
        let table = try backfill(["bad-rows", "badskip", "--database", url])
        #expect(table.code == 0 && table.out.contains("(12345)") && table.out.contains("22P02") && table.out.contains("7 bad rows"), "\(table.out)")
        let unknown = try backfill(["bad-rows", "nosuchjob", "--database", url])
        #expect(unknown.code == 2 && unknown.err.contains("no job named `nosuchjob`"), "\(unknown.err)")

        // exit_zero: the same job finishing with bad rows exits 0.
        let (url2, db2) = try badItems("badzero", rows: 20_000, bad: [7, 15_000])
        let lenient = try jobFile(castJob("badzero", "on_error: {action: skip, exit_zero: true}"))
        let zero = try backfill(["run", lenient, "--database", url2])
        #expect(zero.code == 0, "\(zero.err)")
        #expect(zero.err.contains("done with 2 bad rows"), "\(zero.err)")
        try expectGoodRowsOnce(db2, rows: 20_000, bad: [7, 15_000])
    }

    @Test("stop (the default): the job stops at the first bad row, exit 1, naming its key; committed work is kept")
    func stopNamesTheKey() throws {
        let bad: [Int64] = [2_500, 2_501, 9_000]
        let (url, db) = try badItems("badstop", rows: 20_000, bad: bad)
        let job = try jobFile(castJob("badstop", "batch: {size: 1000, max: 1000}"))
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 1, "\(run.err)")
        #expect(run.err.contains("failed at key (2500)") && run.err.contains("SQLSTATE 22P02"), "\(run.err)")
        let written = try #require(try db.query("SELECT count(*) AS n, max(id) AS top, max(writes) AS most FROM items WHERE writes > 0").first)
        #expect(written["n"].int64 == rowsDone(db, job: "badstop"))
        #expect((written["n"].int64 ?? 0) >= 2_000 && (written["top"].int64 ?? 0) < 2_500 && written["most"].int64 == 1, "\(written)")
        let status = try backfill(["status", "badstop", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"state\":\"failed\"") && status.out.contains("at key (2500)") && status.out.contains("\"bad_rows\":0"), "\(status.out)")
        #expect(try badRowsJSON("badstop", url).isEmpty)
    }

    @Test("skip with max_rows 3: the 4th of 7 bad rows stops the job (exit 1); 3 are quarantined, nothing after the 4th is written")
    func maxRows() throws {
        let bad = Self.scattered
        let (url, db) = try badItems("badmax", rows: 50_000, bad: bad)
        let job = try jobFile(castJob("badmax", "on_error: {action: skip, max_rows: 3}"))
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 1, "\(run.err)")
        #expect(run.err.contains("more than on_error.max_rows (3) bad rows") && run.err.contains("at key (20000)"), "\(run.err)")
        #expect(try badRowsJSON("badmax", url).compactMap { $0["key"] as? [String] }.map { Int64($0[0])! }.sorted() == Array(bad.prefix(3)))
        let top = try db.query("SELECT max(id) AS top FROM items WHERE writes > 0").first?["top"].int64 ?? 0
        #expect(top < 20_000 && top > 12_345, "\(top)")
    }

    @Test("kill -9 in the middle of a bisection, run again: every good row written once, each bad key recorded once")
    func killMidBisection() throws {
        // Four bad rows in every 1,000 keys: every batch is bisected.
        let bad = (1...30_000 / 250).map { Int64($0 * 250) }
        let (url, db) = try badItems("badkill", rows: 30_000, bad: bad)
        let job = try jobFile(castJob("badkill", "on_error: {action: skip, max_rows: 1000}\nbatch: {size: 1000, max: 1000}\nthrottle: {max_rows_per_second: 5000}"))
        let first = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(60) { first.events.contains { $0["event"] as? String == "bad_row" } })
        kill(first.pid, SIGKILL)
        first.wait()
        let atKill = try db.query("SELECT count(*) AS n FROM backfill.bad_rows").first?["n"].int64 ?? 0
        #expect(atKill >= 1 && atKill < Int64(bad.count), "\(atKill)")

        let second = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(second.code == 1, "\(second.err)")
        try expectGoodRowsOnce(db, rows: 30_000, bad: Set(bad))
        let reported = (first.events + second.events).filter { $0["event"] as? String == "bad_row" }.compactMap { ($0["key"] as? [String])?.first }
        #expect(reported.count == Set(reported).count, "a key was reported twice")
        #expect(try badRowsJSON("badkill", url).compactMap { $0["key"] as? [String] }.map { Int64($0[0])! }.sorted() == bad)
    }

    @Test("a composite key is bisected too: bad-rows lists (tenant_id, id)")
    func compositeKey() throws {
        let url = try TestDatabases.create("badcomposite")
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE events (tenant_id int NOT NULL, id bigint NOT NULL, raw text NOT NULL, amount int, writes int NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id));
            INSERT INTO events (tenant_id, id, raw) SELECT t, g, g::text FROM generate_series(1, 4) t, generate_series(1, 2500) g;
            UPDATE events SET raw = 'bad' WHERE (tenant_id, id) IN ((1, 17), (2, 2500), (4, 1));
            ANALYZE events;
            """)
        let job = try jobFile("""
            name: badcomposite
            table: events
            key: [tenant_id, id]
            set:
              amount: raw::int
              writes: writes + 1
            on_error: {action: skip}
            batch: {size: 500, max: 500}
            """)
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 1 && run.err.contains("done with 3 bad rows"), "\(run.err)")
        let keys: [[String]] = try badRowsJSON("badcomposite", url).compactMap { $0["key"] as? [String] }
            .sorted { $0.joined(separator: ",") < $1.joined(separator: ",") }
        #expect(keys == [["1", "17"], ["2", "2500"], ["4", "1"]])
        let counts = try #require(try db.query("SELECT count(*) FILTER (WHERE writes = 1 AND amount = id) AS good, max(writes) AS most FROM events").first)
        #expect(counts["good"].int64 == 10_000 - 3 && counts["most"].int64 == 1, "\(counts)")
    }
}
