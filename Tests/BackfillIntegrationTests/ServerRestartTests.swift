import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Testing

@Suite("Server restart mid-run")
struct ServerRestartTests {
    @Test("pg_ctl restart -m fast mid-run: the job reconnects, finishes, every row once")
    func restartMidRun() throws {
        let cluster = try LocalPostgres.start()
        defer { cluster.stop() }
        let url = try cluster.createDatabase("restart")
        let db = try Connection(url)
        try seedItems(db, rows: 100_000)
        let job = try jobFile(itemsJob(name: "restart", extra: "throttle: {max_rows_per_second: 30000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "restart") >= 20_000 })
        try cluster.restart()
        let code = runner.wait()
        #expect(code == 0, "\(runner.stderr)")
        let reasons = runner.events.filter { $0["event"] as? String == "retry" }.compactMap { $0["reason"] as? String }
        #expect(reasons.contains("connection_lost"), "\(runner.stderr)")
        try expectExactlyOnce(try Connection(url), rows: 100_000)
    }
}

@Suite("Replica lag")
struct ReplicaLagTests {
    @Test("a standby whose replay is paused makes the job wait (replication_lag); replay resumed, the job finishes")
    func replicaLag() throws {
        let primary = try LocalPostgres.start()
        defer { primary.stop() }
        let url = try primary.createDatabase("lag")
        let db = try Connection(url)
        try seedItems(db, rows: 60_000)
        let standby = try primary.startStandby()
        defer { standby.stop() }
        #expect(waitFor(20) {
            (try? db.query("SELECT count(*) AS n FROM pg_stat_replication WHERE state = 'streaming'").first?["n"].int64) == 1
        })
        let replica = try Connection(standby.conninfo())
        try replica.query("SELECT pg_wal_replay_pause()")
        let job = try jobFile(itemsJob(name: "lag", extra: "throttle: {max_replication_lag_ms: 1000, max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) {
            (try? db.query("SELECT throttle_reason FROM backfill.jobs WHERE name = 'lag'").first?["throttle_reason"].string) == "replication_lag"
        }, "\(runner.stderr)")
        let paused = rowsDone(db, job: "lag")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(rowsDone(db, job: "lag") == paused)
        try replica.query("SELECT pg_wal_replay_resume()")
        #expect(runner.wait(timeout: 90) == 0, "\(runner.stderr)")
        let reasons = runner.events.filter { $0["event"] as? String == "throttle" }.compactMap { $0["reason"] as? String }
        #expect(reasons.contains("replication_lag"))
        try expectExactlyOnce(db, rows: 60_000)
    }
}

@Suite("Sessions the server ends")
struct SessionEndTests {
    @Test("idle_session_timeout (57P05, FATAL) ends the workers' sessions between batches: they reconnect, the job finishes, every row once")
    func idleSessionTimeout() throws {
        let (url, db) = try itemsDatabase("idle", rows: 20_000)
        let name = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        try db.execute("ALTER DATABASE \(Identifier.quote(name)) SET idle_session_timeout = '300ms'")
        let job = try jobFile(itemsJob(name: "idle", extra: "batch: {size: 2000, max: 2000, pause_ms: 700}"))
        let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        let retries = run.err.split(separator: "\n").filter { $0.contains("\"event\":\"retry\"") }
        #expect(retries.contains { $0.contains("connection_lost") }, "\(run.err)")
        // The server's FATAL is what ended the sessions (libpq reports it as a closed connection).
        #expect(retries.contains { $0.contains("idle-session timeout") }, "\(retries)")
        try expectExactlyOnce(try Connection(url), rows: 20_000)
    }
}
