import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Testing

@Suite("Adaptive size, throttles, time boxes, cancel")
struct ThrottleTests {
    @Test("batches settle near target_ms on a 500k-row table")
    func targetRespected() throws {
        let (url, db) = try itemsDatabase("target", rows: 500_000)
        let (outcome, events) = try runJob(itemsJob(name: "target") + "\nbatch: {target_ms: 50}\nthrottle: {when_blocking: false}", url: url)
        #expect(outcome.exitCode == 0)
        let durations = events.filter { $0.kind == .batch }.compactMap { e -> Double? in
            if case .double(let d) = e["duration_ms"] { return d } else { return nil }
        }
        let settled = Array(durations.dropFirst(10)).sorted()
        try #require(settled.count >= 5, "only \(durations.count) batches")
        let median = settled[settled.count / 2]
        // Loose on purpose: the benchmark measures this precisely; parallel tests share 2 cores.
        #expect(median > 15 && median < 150, "median \(median) ms of \(settled.count) batches")
        try expectExactlyOnce(db, rows: 500_000)
    }

    @Test("--max-runtime 2s exits 3 about then; the next run finishes; every row once")
    func timeBox() throws {
        let (url, db) = try itemsDatabase("timebox", rows: 200_000)
        let job = try jobFile(itemsJob(name: "timebox", extra: "throttle: {max_rows_per_second: 40000}"))
        let started = Date()
        let first = try backfill(["run", job, "--database", url, "--max-runtime", "2s"])
        let took = Date().timeIntervalSince(started)
        #expect(first.code == 3, "\(first.err)")
        #expect(took > 1.8 && took < 6, "took \(took) s")
        #expect(first.err.contains("time_box"))
        let partial = rowsDone(db, job: "timebox")
        #expect(partial > 0 && partial < 200_000)
        let second = try backfill(["run", job, "--database", url, "--max-runtime", "10m"])
        #expect(second.code == 0, "\(second.err)")
        try expectExactlyOnce(db, rows: 200_000)
        let third = try backfill(["run", job, "--database", url])
        #expect(third.code == 0)
        try expectExactlyOnce(db, rows: 200_000)
    }

    @Test("sessions waiting on the job's row locks make it throttle, and it still finishes")
    func blockingThrottle() throws {
        let (url, db) = try itemsDatabase("blocking", rows: 100_000)
        let done = ResultBox<Bool>()
        let writers = (0..<4).map { _ in
            Thread {
                guard let w = try? Connection(url) else { return }
                while (try? done.get()) == nil {
                    _ = try? w.query("UPDATE items SET touched = touched + 1 WHERE id = $1", [.int(Int64.random(in: 1...100_000))])
                }
            }
        }
        writers.forEach { $0.start() }
        defer { done.set(true) }
        let (outcome, events) = try runJob(itemsJob(name: "blocking") + "\nbatch: {size: 5000, target_ms: 100}\nthrottle: {max_rows_per_second: 25000, blocking_wait_ms: 1}", url: url)
        done.set(true)
        #expect(outcome.exitCode == 0, "\(outcome)")
        let blocking = events.filter { $0.kind == .throttle && $0["reason"] == .string("blocking") }
        #expect(!blocking.isEmpty, "no blocking throttle in \(events.count) events")
        if case .done(let summary) = outcome { #expect((summary.throttledSeconds["blocking"] ?? 0) > 0) }
        try expectExactlyOnce(db, rows: 100_000)
    }

    @Test("check_sql returning false pauses the job (status says why); true resumes it")
    func checkSQL() throws {
        let (url, db) = try itemsDatabase("checksql", rows: 20_000)
        try db.execute("CREATE TABLE gate (go boolean NOT NULL); INSERT INTO gate VALUES (false);")
        let job = try jobFile(itemsJob(name: "gated", extra: "throttle: {check_sql: 'SELECT go FROM gate'}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(20) {
            (try? db.query("SELECT throttle_reason FROM backfill.jobs WHERE name = 'gated'").first?["throttle_reason"].string) == "check_sql"
        })
        Thread.sleep(forTimeInterval: 1.5)
        #expect(rowsDone(db, job: "gated") == 0)
        let status = try backfill(["status", "gated", "--database", url])
        #expect(status.out.contains("throttled: check_sql"), "\(status.out)")
        try db.execute("UPDATE gate SET go = true")
        #expect(runner.wait(timeout: 60) == 0, "\(runner.stderr)")
        let throttles = runner.events.filter { $0["event"] as? String == "throttle" && $0["reason"] as? String == "check_sql" }
        #expect(throttles.map { $0["state"] as? String } == ["waiting", "resumed"])
        try expectExactlyOnce(db, rows: 20_000)
    }

    @Test("max_rows_per_second: 20000 holds the rate within 15 % over a 10 s run")
    func rateLimit() throws {
        let (url, _) = try itemsDatabase("ratelimit", rows: 200_000)
        let (outcome, _) = try runJob(itemsJob(name: "rate") + "\nthrottle: {max_rows_per_second: 20000}", url: url)
        guard case .done(let summary) = outcome else { Issue.record("\(outcome)"); return }
        #expect(abs(summary.rowsPerSecond - 20000) / 20000 < 0.15, "\(summary.rowsPerSecond) rows/s over \(summary.seconds) s")
        #expect(summary.seconds > 8.5)
    }

    @Test("a cancelled job stops its runner and runs again only with --restart")
    func cancel() throws {
        let (url, db) = try itemsDatabase("cancel", rows: 60_000)
        let job = try jobFile(itemsJob(name: "cancellable", extra: "throttle: {max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "cancellable") > 0 })
        #expect(try backfill(["cancel", "cancellable", "--database", url]).code == 0)
        #expect(runner.wait(timeout: 10) == 3)
        let refused = try backfill(["run", job, "--database", url])
        #expect(refused.code == 3)
        #expect(refused.err.contains("cancelled"))
        let status = try backfill(["status", "cancellable", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"state\":\"cancelled\""))
        #expect(try backfill(["run", job, "--database", url, "--restart"]).code == 0)
        // --restart starts over from the first key: rows done before the cancel are written twice.
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes >= 1").first?["n"].int64 == 60_000)
    }
}
