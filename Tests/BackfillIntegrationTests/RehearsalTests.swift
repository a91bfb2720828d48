import Foundation
import PostgresClient
import Testing

@Suite("Staging rehearsal: always measures, gates need samples")
struct RehearsalTests {
    @Test("rehearse on a job that is already done walks every key again, on a checkpoint of its own; the job's stays")
    func alwaysMeasures() throws {
        let (url, db) = try itemsDatabase("remeasure", rows: 30_000)
        let job = try jobFile(itemsJob(name: "remeasured", extra: "where: filled IS NULL"))
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "1s", "--format", "json"])
        #expect(run.code == 0, "\(run.err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        #expect(json["rehearsal_job"] as? String == "remeasured.rehearsal")
        #expect((json["batches"] as? Int ?? 0) >= 2, "the walk covers every key: 30,000 keys in batches of at most 1,000 at first")
        #expect(json["rows"] as? Int == 0, "every row already filled: nothing matches `where`")
        #expect(json["outcome"] as? String == "done")
        try expectExactlyOnce(db, rows: 30_000)
        let jobs = try db.query("SELECT name, state, rows_done FROM backfill.jobs ORDER BY name").rows
        #expect(jobs.map { $0["name"].string } == ["remeasured"], "the rehearsal's checkpoint is removed once done")
        #expect(jobs.first?["state"].string == "done" && jobs.first?["rows_done"].int64 == 30_000)
    }

    @Test("a gate over a job window with too few live transactions fails, saying why; the baseline's worst latency is `max ms`")
    func tooFewSamples() throws {
        let (url, _) = try itemsDatabase("fewsamples", rows: 10)
        let job = try jobFile(itemsJob(name: "few"))
        let traffic = NSTemporaryDirectory() + "backfill-traffic-\(UUID().uuidString).sql"
        try "SELECT pg_sleep(0.2)".write(toFile: traffic, atomically: true, encoding: .utf8)
        defer { unlink(traffic) }
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "1", "--baseline", "1s", "--traffic-sql", traffic, "--max-live-p99-ms", "100000"])
        #expect(run.code == 1, "\(run.out) \(run.err)")
        #expect(run.out.contains("gate live p99 ≤ 100000.0 ms: FAILED (too few samples:"), "\(run.out)")
        #expect(run.out.contains("  max ms ") && !run.out.contains("lock wait)"))
    }
}
