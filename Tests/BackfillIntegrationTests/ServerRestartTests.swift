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
        let (primary, standby, url, db) = try primaryWithStandby("lag", rows: 60_000)
        defer { standby.stop(); primary.stop() }
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
