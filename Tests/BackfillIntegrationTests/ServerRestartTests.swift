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
