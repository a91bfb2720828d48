import BackfillCore
import BackfillTestSupport
import Foundation
import PostgresClient
import Testing

@Suite("Deploy gate (`wait`) and live tuning (`tune`)")
struct DeployGateTests {
    @Test("wait: 0 when a concurrent run finishes, 3 on timeout, 1 for a cancelled job; a job not registered yet is waited for")
    func waitOutcomes() throws {
        let (url, db) = try itemsDatabase("wait", rows: 24_000)
        // No store in the database yet: waited for until the timeout, like a pending job.
        let noStore = try backfill(["wait", "gate", "--database", url, "--timeout", "2s"])
        #expect(noStore.code == 3 && noStore.err.contains("gate is not registered yet (no checkpoint store in schema `backfill` yet)"), "\(noStore.err)")

        let job = try jobFile(itemsJob(name: "gate", extra: "throttle: {max_rows_per_second: 6000}\nbatch: {size: 500, max: 1000}"))
        let run = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(20) { rowsDone(db, job: "gate") > 0 })
        let gate = try backfill(["wait", "gate", "--database", url, "--timeout", "60s"], timeout: 90)
        let gateEnded = Date()
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")
        #expect(gate.code == 0, "\(gate.err)")
        #expect(gate.out.contains("gate is done"))
        let progress = gate.err.split(separator: "\n").filter { $0.hasPrefix("gate: running") }
        #expect(progress.count >= 1 && progress.allSatisfy { $0.contains("rows_done=") && $0.contains("%") }, "\(gate.err)")
        let finished = try #require(try CheckpointStore().status(job: "gate", db: db).first?.finishedAt)
        #expect(gateEnded.timeIntervalSince(finished) < 3, "wait returned \(gateEnded.timeIntervalSince(finished)) s after the job finished")
        try expectExactlyOnce(db, rows: 24_000)

        // A store that does not hold the job (yet): waited for, then exit 3 naming what to check.
        let began0 = Date()
        let unknown = try backfill(["wait", "nosuch", "--database", url, "--timeout", "2s", "--log-format", "json"])
        #expect(unknown.code == 3 && Date().timeIntervalSince(began0) >= 2, "\(unknown.err)")
        let unknownLast = try #require(unknown.events.last { $0["event"] as? String == "wait" }, "\(unknown.err)")
        #expect(unknownLast["state"] as? String == "not_registered" && unknownLast["store_exists"] as? Bool == true && unknownLast["exit_code"] as? Int == 3, "\(unknown.err)")
        #expect((unknownLast["next"] as? String)?.contains("--schema") == true, "\(unknown.err)")

        // A stopped job is waited for until the timeout; cancelled, it ends the wait with 1.
        try db.execute("UPDATE items SET filled = NULL, writes = 0")
        #expect(try backfill(["run", job, "--database", url, "--restart", "--max-runtime", "1s"]).code == 3)
        let began = Date()
        let timedOut = try backfill(["wait", "gate", "--database", url, "--timeout", "2s", "--log-format", "json"])
        #expect(timedOut.code == 3, "\(timedOut.err)")
        #expect(Date().timeIntervalSince(began) >= 2)
        let last = try #require(timedOut.events.last { $0["event"] as? String == "wait" })
        #expect(last["exit_code"] as? Int == 3 && last["state"] as? String == "pending" && last["rows_done"] is Int, "\(timedOut.err)")
        #expect(try backfill(["cancel", "gate", "--database", url]).code == 0)
        let cancelled = try backfill(["wait", "gate", "--database", url])
        #expect(cancelled.code == 1 && cancelled.err.contains("gate is cancelled"), "\(cancelled.err)")
        #expect(try db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'backfill:wait' AND state <> 'idle'").first?["n"].int64 == 0)
    }

    @Test("wait started before the run, which waits for its requirement: it waits for the job to register, then for it to finish (exit 0)")
    func waitBeforeRegistration() throws {
        let (url, db) = try itemsDatabase("wait_early", rows: 6_000)
        let gate = try CLIProcess(["wait", "early", "--database", url, "--timeout", "90s"])
        let job = try jobFile(itemsJob(name: "early", extra: "requires: SELECT coalesce(max(version), 0) >= 7 FROM schema_migrations\nthrottle: {max_rows_per_second: 3000}"))
        let run = try CLIProcess(["run", job, "--database", url, "--wait-for-requirements", "60s"])
        usleep(2_500_000)
        #expect(gate.process.isRunning, "the gate is still waiting: \(gate.stderr)")
        try db.execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY); INSERT INTO schema_migrations VALUES (7)")
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")
        let finished = Date()
        #expect(gate.wait(timeout: 30) == 0, "\(gate.stderr)")
        #expect(Date().timeIntervalSince(finished) < 3, "the gate ended within 3 s of the run")
        #expect(gate.stdout.contains("early is done"), "\(gate.stdout)")
        let lines = gate.stderr.split(separator: "\n")
        let registered = try #require(lines.firstIndex { $0.hasPrefix("early: ") }, "\(gate.stderr)")
        #expect(lines[..<registered].contains { $0 == "early is not registered yet (no checkpoint store in schema `backfill` yet)" }, "\(gate.stderr)")
        #expect(lines[registered...].allSatisfy { !$0.contains("not registered") }, "\(gate.stderr)")
        try expectExactlyOnce(db, rows: 6_000)
    }

    @Test("wait refuses what waiting cannot fix (exit 2): an invalid job name, a connection string libpq cannot read", arguments: [
        (["wait", "no such job", "--database", "postgresql://nobody@127.0.0.1:9/none"], "`no such job` is not a valid job name"),
        (["wait", "gate", "--database", "postgresql+psycopg2://nobody:hunter2@127.0.0.1:9/none"], "SQLAlchemy-style URL"),
    ])
    func waitRefused(arguments: [String], expected: String) throws {
        let run = try backfill(arguments)
        #expect(run.code == 2 && run.err.contains(expected) && !run.err.contains("hunter2"), "\(run.err)")
    }

    @Test("tune --max-rows-per-second halves a running job's rate within 2 s; status shows who set it; --reset clears it")
    func tuneRate() throws {
        let (url, db) = try itemsDatabase("tune", rows: 140_000)
        let job = try jobFile(itemsJob(name: "tuned", extra: "throttle: {max_rows_per_second: 20000}\nbatch: {size: 1000, max: 2000}"))
        let run = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { (run.events.last { $0["event"] as? String == "batch" }?["run_rows"] as? Int ?? 0) >= 40_000 }, "\(run.stderr)")
        let tunedAt = Date()
        let tune = try backfill(["tune", "tuned", "--max-rows-per-second", "10000", "--database", url])
        #expect(tune.code == 0 && tune.out.contains("max_rows_per_second=10000"), "\(tune.out)\(tune.err)")
        usleep(4_200_000)
        let status = try backfill(["status", "tuned", "--database", url, "--format", "json"])
        let tuning = try #require((try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [[String: Any]])?.first?["tuning"] as? [String: Any], "\(status.out)")
        #expect(tuning["max_rows_per_second"] as? Int == 10000 && (tuning["by"] as? String)?.contains("@") == true && tuning["at"] is String)
        let table = try backfill(["status", "tuned", "--database", url])
        #expect(table.out.contains("tuned: max_rows_per_second=10000 by "), "\(table.out)")
        #expect(try backfill(["tune", "tuned", "--reset", "--database", url]).code == 0)
        let cleared = try backfill(["status", "tuned", "--database", url, "--format", "json"])
        #expect(!cleared.out.contains("\"tuning\""), "\(cleared.out)")
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")

        // Rows per second from the batch events: two seconds before the tune, and the two seconds
        // from 2 s after it (the override is read at the next claim).
        let batches = run.events.filter { $0["event"] as? String == "batch" }.compactMap { e -> (Date, Int)? in
            guard let t = eventTime(e), let rows = e["rows"] as? Int else { return nil }
            return (t, rows)
        }
        func rate(_ from: Double, _ to: Double) -> Double {
            Double(batches.filter { $0.0.timeIntervalSince(tunedAt) >= from && $0.0.timeIntervalSince(tunedAt) < to }.map(\.1).reduce(0, +)) / (to - from)
        }
        let before = rate(-2, 0), after = rate(2, 4)
        #expect(before > 14_000 && before < 26_000, "before: \(before) rows/s")
        #expect(after / before > 0.35 && after / before < 0.65, "before \(before) rows/s, after \(after) rows/s")
        let picked = try #require(run.events.first { $0["event"] as? String == "tune" && $0["max_rows_per_second"] as? Int == 10000 })
        #expect(try #require(eventTime(picked)).timeIntervalSince(tunedAt) < 2, "picked up the override")
        #expect(run.events.contains { $0["event"] as? String == "tune" && $0["reset"] as? Bool == true })
        try expectExactlyOnce(db, rows: 140_000)
    }

    @Test("tune validates like the job file (exit 2) and needs a known job", arguments: [
        (["--target-ms", "0"], "--target-ms 0 is out of range"),
        (["--workers", "2000"], "1 to 1024"),
        (["--pause-ms", "3600001"], "batch.pause_ms"),
        ([], "give at least one"),
        (["--reset", "--workers", "2"], "--reset clears every override"),
    ])
    func tuneRefused(flags: [String], expected: String) throws {
        let run = try backfill(["tune", "somejob"] + flags + ["--database", "postgresql://nobody@127.0.0.1:9/none"])
        #expect(run.code == 2 && run.err.contains(expected), "\(run.err)")
    }

    @Test("tune of an unknown job exits 2; --workers applies to the next run")
    func tuneWorkers() throws {
        let (url, db) = try itemsDatabase("tuneworkers", rows: 30_000)
        #expect(try backfill(["tune", "nosuch", "--workers", "2", "--database", url]).code == 2)
        let job = try jobFile(itemsJob(name: "tw", extra: "throttle: {max_rows_per_second: 10000}"))
        #expect(try backfill(["run", job, "--database", url, "--max-runtime", "1s"]).code == 3)
        #expect(try backfill(["tune", "tw", "--workers", "3", "--max-rows-per-second", "0", "--database", url]).code == 0)
        let run = try backfill(["run", job, "--database", url, "--workers", "1", "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        #expect(run.events.first { $0["event"] as? String == "start" }?["workers"] as? Int == 3)
        try expectExactlyOnce(db, rows: 30_000)
    }
}
