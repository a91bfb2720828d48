import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

@Suite("Stops that always work")
struct StopTests {
    @Test("a slow-loris client on /metrics does not delay exit, and another client is served meanwhile")
    func slowLoris() throws {
        let (url, db) = try itemsDatabase("loris", rows: 30_000)
        let port = try LocalPostgres.freePort()
        let job = try jobFile(itemsJob(name: "loris", extra: "throttle: {max_rows_per_second: 10000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--metrics-port", String(port), "--metrics-bind", "127.0.0.1"])
        var loris: Int32?
        #expect(waitFor(10) { loris = tcpConnect(port: port); return loris != nil })
        let feeding = Atomic<Bool>(true)
        let lorisFD = try #require(loris)
        let feeder = Thread {
            // One byte every 0.5 s, never a whole request.
            for byte in Array("GET /metrics HTTP/1.0\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 200) {
                guard feeding.load(ordering: .relaxed) else { return }
                var b = byte
                if send(lorisFD, &b, 1, Int32(MSG_NOSIGNAL)) != 1 { return }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        feeder.start()
        defer { feeding.store(false, ordering: .relaxed); close(lorisFD) }
        let served = httpGet(port: port, path: "/metrics")
        #expect(served?.hasPrefix("HTTP/1.0 200 OK") == true, "\(served ?? "no answer")")
        #expect(waitFor(30) { rowsDone(db, job: "loris") == 30_000 })
        var done: Date?
        #expect(waitFor(30) {
            if done == nil, runner.stderr.contains("loris: done") { done = Date() }
            return !runner.process.isRunning
        })
        #expect(runner.wait() == 0, "\(runner.stderr)")
        let lingered = Date().timeIntervalSince(try #require(done))
        #expect(lingered < 1.5, "exited \(lingered) s after done")
        try expectExactlyOnce(db, rows: 30_000)
    }

    @Test("two SIGTERMs end a run stuck in a check_sql of SELECT pg_sleep(600) within 2 s (exit 3)")
    func secondSignal() throws {
        let (url, db) = try itemsDatabase("hang", rows: 10_000)
        let job = try jobFile(itemsJob(name: "hang", extra: "throttle: {check_sql: SELECT pg_sleep(600) IS NOT NULL}\ntimeouts: {statement_ms: 600000}"))
        let runner = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) {
            (try? db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()").first?["n"].int) == 1
        }, "\(runner.stderr)")
        let started = Date()
        kill(runner.pid, SIGTERM)
        Thread.sleep(forTimeInterval: 0.2)
        kill(runner.pid, SIGTERM)
        #expect(runner.wait(timeout: 10) == 3, "\(runner.stderr)")
        #expect(Date().timeIntervalSince(started) < 2, "\(Date().timeIntervalSince(started)) s")
        // The check was cancelled, not left running on the server.
        #expect(waitFor(5) {
            (try? db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()").first?["n"].int) == 0
        })
    }

    @Test("--metrics-bind and BACKFILL_METRICS_BIND: an address that is not one, or not this host's, exits 2 naming it")
    func metricsBind() throws {
        let (url, _) = try itemsDatabase("bind", rows: 100)
        let job = try jobFile(itemsJob(name: "bind"))
        let port = String(try LocalPostgres.freePort())
        let foreign = try backfill(["run", job, "--database", url, "--metrics-port", port, "--metrics-bind", "203.0.113.7"])
        #expect(foreign.code == 2, "\(foreign.err)")
        #expect(foreign.err.contains("203.0.113.7"), "\(foreign.err)")
        let garbage = try backfill(["run", job, "--database", url, "--metrics-port", port], environment: ["BACKFILL_METRICS_BIND": "localhost:80"])
        #expect(garbage.code == 2, "\(garbage.err)")
        #expect(garbage.err.contains("not an IPv4 or IPv6 address"), "\(garbage.err)")
        let fine = try backfill(["run", job, "--database", url, "--metrics-port", port], environment: ["BACKFILL_METRICS_BIND": "127.0.0.1"])
        #expect(fine.code == 0, "\(fine.err)")
    }
}
