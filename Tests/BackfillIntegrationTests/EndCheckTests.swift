import BackfillCore
import PostgresClient
import Testing

@Suite("The end check, overlapped with the end of the walk")
struct EndCheckTests {
    @Test("the overlapped end check counts every row left matching, behind the walk's frontier and ahead of it", arguments: [1, 2])
    func overlapped(workers: Int) throws {
        let (url, db) = try itemsDatabase("endcheck\(workers)", rows: 200_000)
        // A `set` that leaves three rows matching: one early in the key space, one in the middle,
        // one that is still ahead of the walk when the early count starts (at 95 % walked).
        let yaml = """
            name: end-check-\(workers)
            table: items
            key: [id]
            where: filled IS NULL
            set:
              filled: CASE WHEN id IN (7, 100007, 199990) THEN NULL ELSE id * 2 END
              writes: writes + 1
            batch: {size: 1000, min: 1000, max: 1000, pause_ms: 50}
            workers: \(workers)
            repeat: true
            """
        let (outcome, events) = try runJob(yaml, url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        let pass = try #require(events.first { $0.kind == .pass })
        #expect(pass["remaining"] == .int(3), "\(pass.fields)")
        #expect(pass["end_check"] == .string("overlapped"))
        let done = try #require(events.first { $0.kind == .done })
        #expect(done["end_check"] == .string("overlapped"))
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes = 1").first?["n"].int64 == 200_000)
    }

    @Test("the early count starts when the ranges hold far fewer keys than estimated (half the rows deleted, the statistics not yet told)")
    func sparseKeys() throws {
        let (url, db) = try itemsDatabase("endchecksparse", rows: 200_000)
        // The planner still counts 200,000 rows, so each range's estimate is twice what it holds:
        // by the estimates, 5 % of the keys are never left, and the count would wait for the end.
        try db.execute("ALTER TABLE items SET (autovacuum_enabled = false); DELETE FROM items WHERE id % 2 = 0")
        let yaml = """
            name: end-check-sparse
            table: items
            key: [id]
            where: filled IS NULL
            set:
              filled: id * 2
            batch: {size: 1000, min: 1000, max: 1000, pause_ms: 20}
            """
        let (outcome, events) = try runJob(yaml, url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        let done = try #require(events.first { $0.kind == .done })
        #expect(done["end_check"] == .string("overlapped"), "\(done.fields)")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled IS DISTINCT FROM id * 2").first?["n"].int64 == 0)
    }

    @Test("a run too short for the early count checks after the walk")
    func afterWalk() throws {
        let (url, db) = try itemsDatabase("endcheckafter", rows: 5_000)
        let spec = try JobSpec.parse(yaml: itemsJob(name: "after", extra: "where: filled IS NULL\nbatch: {size: 5000, min: 5000, max: 5000}"), file: "a.yaml")
        let log = EventLog()
        let outcome = Runner(spec: spec, options: RunOptions(database: url)) { log.append($0) }.run()
        #expect(outcome.exitCode == 0, "\(outcome)")
        let done = try #require(log.events.first { $0.kind == .done })
        #expect(done["end_check"] == .string("after_walk"))
        try expectExactlyOnce(db, rows: 5_000)
    }
}
