import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

/// Two throwaway servers for the fleet tests, so that targets are spread over hosts as in a
/// sharded deployment; started once and stopped at exit.
private let fleetServers = Mutex<[LocalPostgres]>([])

private func servers() throws -> [LocalPostgres] {
    try fleetServers.withLock { list in
        if list.isEmpty { list = [try LocalPostgres.start(), try LocalPostgres.start()] }
        return list
    }
}

/// A new database on `server` holding `items` with `rows` rows (`withColumn` false: without the
/// column the job sets).
private func shard(_ server: LocalPostgres, _ label: String, rows: Int, withColumn: Bool = true) throws -> (url: String, db: Connection) {
    let url = try server.createDatabase("fleet_\(label)_\(getpid())_\(UUID().uuidString.prefix(6).lowercased())")
    let db = try Connection(url)
    try seedItems(db, rows: rows)
    if !withColumn { try db.execute("ALTER TABLE items DROP COLUMN filled") }
    return (url, db)
}

/// A targets file; each target is (name, connection string).
private func targetsFile(_ targets: [(String, String)], _ extra: String) throws -> String {
    try jobFile("targets:\n" + targets.map { "  - name: \($0.0)\n    database: \"\($0.1.replacingOccurrences(of: "\"", with: "\\\""))\"\n" }.joined() + extra)
}

/// Samples the servers' `pg_stat_activity`: how many databases have a session of the job at
/// once, at most.
private final class ActivitySampler: Sendable {
    private let state = Mutex<(most: Int, stop: Bool)>((0, false))
    private let finished = DispatchSemaphore(value: 0)

    init(servers: [LocalPostgres], job: String) {
        let conninfos = servers.map { $0.conninfo() }
        let thread = Thread { [self] in
            let sessions = conninfos.compactMap { try? Connection($0, applicationName: "fleet-sampler") }
            while !self.state.withLock({ $0.stop }) {
                let count = sessions.reduce(0) { total, db in
                    total + Int((try? db.query("SELECT count(DISTINCT datname) AS n FROM pg_stat_activity WHERE application_name LIKE $1",
                                               [.text("backfill:\(job)%")]).first?["n"].int64 ?? 0) ?? 0)
                }
                self.state.withLock { $0.most = max($0.most, count) }
                usleep(20_000)
            }
            self.finished.signal()
        }
        thread.start()
    }

    /// Stops sampling and returns the most databases seen at once.
    func stop() -> Int {
        state.withLock { $0.stop = true }
        finished.wait()
        return state.withLock { $0.most }
    }
}

/// The `ts` of the first event of `kind` for `target`.
private func eventTime(_ events: [[String: Any]], _ kind: String, _ target: String) -> String? {
    events.first { $0["event"] as? String == kind && $0["target"] as? String == target }?["ts"] as? String
}

/// Waits until no session of `job` is left on the servers (a killed runner's sessions end
/// when the server sees their sockets close).
private func waitForNoSessions(_ servers: [LocalPostgres], job: String) throws -> Bool {
    let sessions = try servers.map { try Connection($0.conninfo(), applicationName: "fleet-sampler") }
    return try waitFor(20) {
        try sessions.allSatisfy { db in
            try db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE $1", [.text("backfill:\(job)%")]).first?["n"].int64 == 0
        }
    }
}

@Suite("Fleet runs across databases (run/status/wait --targets)", .serialized)
struct FleetRunTests {
    @Test("four shards on two servers, concurrency 2: never more than two at once, the canary first; kill -9 mid-fleet, rerun: every row once; status and wait see all four done")
    func fleet() throws {
        let servers = try servers()
        let rows = 20_000
        let shards = try [("shard-a", servers[0]), ("shard-b", servers[0]), ("shard-c", servers[1]), ("shard-d", servers[1])].map { name, server in
            (name, try shard(server, name, rows: rows))
        }
        let job = "fleet-fill"
        let path = try jobFile(itemsJob(name: job, extra: "batch: {size: 1000, max: 1000}\nthrottle: {max_rows_per_second: 8000}"))
        let targets = try targetsFile(shards.map { ($0.0, $0.1.url) }, "concurrency: 2\ncanary: shard-c\non_target_failure: stop\n")

        // First run: killed once a target after the canary has committed batches.
        let sampler = ActivitySampler(servers: servers, job: job)
        let first = try CLIProcess(["run", path, "--targets", targets, "--log-format", "json"])
        let started = waitFor(60) {
            let events = first.events
            return ["shard-a", "shard-b", "shard-d"].contains { eventTime(events, "batch", $0) != nil }
        }
        #expect(started, "no target after the canary started: \(first.stderr.suffix(2000))")
        usleep(300_000)
        kill(first.pid, SIGKILL)
        _ = first.wait()
        let events = first.events
        #expect(try waitForNoSessions(servers, job: job))

        // The canary was done before any other target started.
        let canaryDone = try #require(eventTime(events, "done", "shard-c"), "\(first.stderr.suffix(2000))")
        for other in ["shard-a", "shard-b", "shard-d"] {
            if let start = eventTime(events, "start", other) { #expect(canaryDone < start, "\(other) started at \(start), before the canary was done at \(canaryDone)") }
        }
        #expect(eventTime(events, "start", "shard-a") != nil, "shard-a, first in file order, starts right after the canary")
        let partly = shards.filter { rowsDone($0.1.db, job: job) < Int64(rows) }
        #expect(!partly.isEmpty, "the kill came after the fleet was done")

        // Rerun: resumes every target; the canary is done and not run again.
        let rerun = try backfill(["run", path, "--targets", targets, "--log-format", "json"])
        let most = sampler.stop()
        #expect(rerun.code == 0, "\(rerun.err.suffix(3000))")
        #expect(most <= 2, "\(most) databases had sessions of the job at once")
        #expect(most == 2, "the two targets at once never overlapped")
        for (name, shard) in shards {
            try expectExactlyOnce(shard.db, rows: rows)
            #expect(rowsDone(shard.db, job: job) == Int64(rows), "\(name)")
        }
        let fleetEvent = try #require(rerun.events.first { $0["event"] as? String == "fleet" && $0["state"] as? String == "done" })
        #expect(fleetEvent["exit_code"] as? Int == 0)
        #expect(rerun.events.contains { $0["event"] as? String == "batch" && $0["target"] as? String != nil })
        for (_, shard) in shards { #expect(!rerun.err.contains(shard.url)) }

        // status --targets: one row per target, all done, and a total.
        let status = try backfill(["status", job, "--targets", targets, "--format", "json"])
        #expect(status.code == 0, "\(status.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any])
        let rowsList = try #require(object["targets"] as? [[String: Any]])
        #expect(rowsList.map { $0["target"] as? String } == ["shard-a", "shard-b", "shard-c", "shard-d"])
        #expect(rowsList.allSatisfy { $0["state"] as? String == "done" && $0["rows_done"] as? Int == rows && $0["reachable"] as? Bool == true })
        let total = try #require(object["total"] as? [String: Any])
        #expect(total["done"] as? Bool == true && total["rows_done"] as? Int == 4 * rows)
        let table = try backfill(["status", job, "--targets", targets])
        #expect(table.code == 0 && table.out.contains("TOTAL") && table.out.contains("shard-d"), "\(table.out)\(table.err)")

        // wait --targets: the fleet's gate.
        let wait = try backfill(["wait", job, "--targets", targets, "--timeout", "20s"])
        #expect(wait.code == 0, "\(wait.err)")
    }

    @Test("a shard without the column: that target exits 2, the others finish with continue and the fleet exits 2 naming it; with stop, no target starts after it")
    func badShard() throws {
        let servers = try servers()
        let rows = 2_000
        let good1 = try shard(servers[0], "good1", rows: rows)
        let bad = try shard(servers[1], "bad", rows: rows, withColumn: false)
        let good2 = try shard(servers[0], "good2", rows: rows)
        let path = try jobFile(itemsJob(name: "fleet-bad"))

        let goOn = try targetsFile([("good-1", good1.url), ("broken", bad.url), ("good-2", good2.url)], "on_target_failure: continue\n")
        let run = try backfill(["run", path, "--targets", goOn])
        #expect(run.code == 2, "\(run.err)")
        #expect(run.err.contains("broken") && run.err.contains("filled"), "\(run.err)")
        #expect(run.err.contains("summary: fleet-bad total: 3 targets"), "\(run.err)")
        try expectExactlyOnce(good1.db, rows: rows)
        try expectExactlyOnce(good2.db, rows: rows)
        #expect(try bad.db.query("SELECT to_regclass('backfill.jobs') IS NULL AS none").first?["none"].bool == true, "the invalid target's store was created")
        let status = try backfill(["status", "fleet-bad", "--targets", goOn, "--format", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any])
        #expect((object["targets"] as? [[String: Any]])?.map { $0["state"] as? String } == ["done", "not_registered", "done"], "\(status.out)")

        // With stop: the broken target first; nothing starts after it.
        let fresh = try shard(servers[0], "fresh", rows: rows)
        let stop = try targetsFile([("broken", bad.url), ("fresh", fresh.url)], "on_target_failure: stop\n")
        let stopped = try backfill(["run", path, "--targets", stop, "--log-format", "json"])
        #expect(stopped.code == 2, "\(stopped.err)")
        #expect(stopped.events.contains { $0["event"] as? String == "fleet" && $0["state"] as? String == "skipped" && $0["target"] as? String == "fresh" })
        #expect(!stopped.events.contains { $0["event"] as? String == "start" && $0["target"] as? String == "fresh" })
        #expect(try fresh.db.query("SELECT count(*) FILTER (WHERE writes > 0) AS n FROM items").first?["n"].int64 == 0)
        #expect(try fresh.db.query("SELECT to_regclass('backfill.jobs') IS NULL AS none").first?["none"].bool == true)
    }

    @Test("a target whose ${VAR} is unset: exit 2 naming the variable and the target, nothing touched, no password shown")
    func unsetVariable() throws {
        let servers = try servers()
        let one = try shard(servers[0], "var", rows: 100)
        let path = try jobFile(itemsJob(name: "fleet-var"))
        let password = servers[0].password
        let targets = try targetsFile([("first", servers[0].url(database: try one.db.query("SELECT current_database() AS d").first!["d"].string!)),
                                       ("second", "${FLEET_SECOND_URL_UNSET}")], "")
        let run = try backfill(["run", path, "--targets", targets])
        #expect(run.code == 2)
        #expect(run.err.contains("FLEET_SECOND_URL_UNSET") && run.err.contains("second"), "\(run.err)")
        #expect(!run.err.contains(password))
        #expect(try one.db.query("SELECT to_regclass('backfill.jobs') IS NULL AS none").first?["none"].bool == true, "the first target was touched")
        // Set, it runs; --target-index picks the second alone.
        let set = try backfill(["run", path, "--targets", targets, "--target-index", "1"], environment: ["FLEET_SECOND_URL_UNSET": one.url])
        #expect(set.code == 0, "\(set.err)")
        #expect(!set.err.contains(password))
        try expectExactlyOnce(one.db, rows: 100)
    }
}
