import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Testing

@Suite("backfill run, status and verify as a user runs them")
struct RunTests {
    @Test("a 300k-row fill: every row right, status says done, verify exits 0")
    func fill300k() throws {
        let (url, db) = try itemsDatabase("fill300k", rows: 300_000)
        let job = try jobFile(itemsJob(name: "fill-300k", extra: "where: filled IS NULL"))
        let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: 300_000)

        let batches = run.events.filter { $0["event"] as? String == "batch" }
        #expect(!batches.isEmpty)
        for b in batches {
            #expect(b["job"] as? String == "fill-300k")
            #expect(b["rows"] is Int && b["batch_size"] is Int && b["duration_ms"] is Double && b["attempt"] is Int && b["last_key"] is [String])
        }
        #expect(batches.compactMap { $0["rows"] as? Int }.reduce(0, +) == 300_000)
        #expect(run.events.first?["event"] as? String == "start")
        #expect(run.events.last?["event"] as? String == "done")

        let status = try backfill(["status", "fill-300k", "--database", url, "--format", "json"])
        #expect(status.code == 0)
        let jobs = try #require(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [[String: Any]])
        #expect(jobs.count == 1)
        #expect(jobs.first?["name"] as? String == "fill-300k")
        #expect(jobs.first?["state"] as? String == "done")
        #expect(jobs.first?["rows_done"] as? Int == 300_000)
        #expect(jobs.first?["batches"] as? Int == batches.count)
        #expect(jobs.first?["last_key"] as? [String] == ["300000"])
        #expect(jobs.first?["updated_at"] is String)

        let verify = try backfill(["verify", job, "--database", url])
        #expect(verify.code == 0, "\(verify.out) \(verify.err)")
        #expect(verify.out.contains("0 rows still match"))

        // A finished job run again exits 0 at once and changes nothing.
        let again = try backfill(["run", job, "--database", url])
        #expect(again.code == 0)
        try expectExactlyOnce(db, rows: 300_000)

        // Rows that reappear make verify fail with exit 1.
        try db.execute("UPDATE items SET filled = NULL WHERE id <= 10")
        #expect(try backfill(["verify", job, "--database", url]).code == 1)
    }

    @Test("kill -9 mid-run, run again: every row written exactly once")
    func killNine() throws {
        let (url, db) = try itemsDatabase("kill9", rows: 200_000)
        let job = try jobFile(itemsJob(name: "kill9", extra: "batch: {size: 500, max: 2000}\nthrottle: {max_rows_per_second: 40000}"))
        let first = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "kill9") >= 20_000 })
        kill(first.pid, SIGKILL)
        first.wait()
        // Nobody runs it now: status must not say `running`.
        #expect(try waitFor(10) { try backfill(["status", "kill9", "--database", url]).out.contains("stopped (no runner since") })
        let json = try backfill(["status", "kill9", "--database", url, "--format", "json"]).out
        #expect(json.contains("\"state\":\"pending\"") && json.contains("no_runner_since"), "\(json)")
        let partial = rowsDone(db, job: "kill9")
        #expect(partial > 0 && partial < 200_000)
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes = 1").first?["n"].int64 == partial)

        let second = try backfill(["run", job, "--database", url])
        #expect(second.code == 0, "\(second.err)")
        try expectExactlyOnce(db, rows: 200_000)
    }

    @Test("a session holding a row lock for 5 s: the job retries briefly and finishes; writers never wait long")
    func heldRowLock() throws {
        let (url, db) = try itemsDatabase("rowlock", rows: 60_000)
        let job = try jobFile(itemsJob(name: "rowlock", extra: """
            batch: {size: 1000, max: 5000}
            timeouts: {lock_ms: 100}
            retry: {max_attempts: 100, backoff_ms: 20, max_backoff_ms: 300}
            throttle: {max_rows_per_second: 30000}
            """))
        let holder = try Connection(url)
        try holder.execute("BEGIN; SELECT * FROM items WHERE id = 30000 FOR UPDATE;")
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])

        // A live writer touching random rows while the job runs; its worst wait is measured.
        let writerURL = url
        let worst = ResultBox<Double>()
        let writer = Thread {
            var maxMs = 0.0
            if let w = try? Connection(writerURL) {
                let end = Date().addingTimeInterval(4)
                while Date() < end {
                    let id = Int64.random(in: 1...60_000)
                    if id == 30000 { continue }
                    let t = Date()
                    _ = try? w.query("UPDATE items SET touched = touched + 1 WHERE id = $1", [.int(id)])
                    maxMs = max(maxMs, Date().timeIntervalSince(t) * 1000)
                }
            }
            worst.set(maxMs)
        }
        writer.start()
        Thread.sleep(forTimeInterval: 5)
        try holder.execute("COMMIT")
        let code = runner.wait()
        #expect(code == 0, "\(runner.stderr)")
        try expectExactlyOnce(db, rows: 60_000)
        let retries = runner.events.filter { $0["event"] as? String == "retry" }
        #expect(!retries.isEmpty)
        #expect(retries.allSatisfy { $0["reason"] as? String == "lock_timeout" })
        // Each attempt gave up after about lock_ms, not after waiting for the holder.
        let attemptMs = retries.compactMap { $0["duration_ms"] as? Double }
        #expect(attemptMs.allSatisfy { $0 < 600 }, "\(attemptMs)")
        let batchMax = runner.events.filter { $0["event"] as? String == "batch" }.compactMap { $0["duration_ms"] as? Double }.max() ?? 0
        let writerWorst = try #require(worst.wait())
        #expect(writerWorst < max(batchMax, 100) + 400, "writer waited \(writerWorst) ms, longest batch \(batchMax) ms")
    }

    @Test("a second runner exits 4 at once naming the holder; SIGTERM exits 3; the next run finishes")
    func leaseAndSignal() throws {
        let (url, db) = try itemsDatabase("lease", rows: 100_000)
        let job = try jobFile(itemsJob(name: "lease", extra: "throttle: {max_rows_per_second: 20000}"))
        let first = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "lease") > 0 })

        let started = Date()
        let second = try backfill(["run", job, "--database", url])
        #expect(second.code == 4, "\(second.err)")
        #expect(Date().timeIntervalSince(started) < 3)
        #expect(second.err.contains("another runner holds this job"))
        #expect(second.err.contains("backfill:lease"))

        kill(first.pid, SIGTERM)
        #expect(first.wait(timeout: 10) == 3, "\(first.stderr)")
        #expect(first.stderr.contains("stopped"))
        let status = try backfill(["status", "lease", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"state\":\"pending\""))

        let third = try backfill(["run", job, "--database", url])
        #expect(third.code == 0, "\(third.err)")
        try expectExactlyOnce(db, rows: 100_000)
    }

    @Test("a changed job file refuses to resume (exit 2) unless --restart")
    func specChange() throws {
        let (url, _) = try itemsDatabase("specchange", rows: 5_000)
        let job = try jobFile(itemsJob(name: "spec", extra: "where: filled IS NULL"))
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        let changed = try jobFile(itemsJob(name: "spec", extra: "where: filled IS NULL OR filled < 0"))
        let refused = try backfill(["run", changed, "--database", url])
        #expect(refused.code == 2)
        #expect(refused.err.contains("--restart"))
        let restarted = try backfill(["run", changed, "--database", url, "--restart"])
        #expect(restarted.code == 0, "\(restarted.err)")
    }

    @Test("pause from another process stops the runner (exit 3); run on a paused job exits 3; resume and run finish")
    func pauseResume() throws {
        let (url, db) = try itemsDatabase("pause", rows: 60_000)
        let job = try jobFile(itemsJob(name: "pausable", extra: "throttle: {max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "pausable") > 0 })
        let paused = Date()
        #expect(try backfill(["pause", "pausable", "--database", url]).code == 0)
        #expect(runner.wait(timeout: 10) == 3)
        #expect(Date().timeIntervalSince(paused) < 3)
        let refused = try backfill(["run", job, "--database", url])
        #expect(refused.code == 3)
        let status = try backfill(["status", "--database", url])
        #expect(status.out.contains("paused by"))
        #expect(try backfill(["resume", "pausable", "--database", url]).code == 0)
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        try expectExactlyOnce(db, rows: 60_000)
    }
}

extension ResultBox {
    func wait() -> T? {
        for _ in 0..<600 {
            if let v = try? get() { return v }
            usleep(10_000)
        }
        return nil
    }
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    func set(_ v: T) { lock.withLock { value = v } }
    func get() throws -> T {
        guard let v = lock.withLock({ value }) else { throw NotYet() }
        return v
    }
}

struct NotYet: Error {}
