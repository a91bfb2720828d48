import BackfillCore
import BackfillTestSupport
import Foundation
import PostgresClient
import Testing

/// One voice on the terminal and in logs: every failure is `backfill: …` and `next: …` (or one
/// JSON object with `message`, `exit_code` and `next`), and with `--log-format json` every stderr
/// line is a JSON object, signals and the closing summary included.
@Suite("Messages: one voice for people and for log pipelines")
struct MessagesTests {
    @Test("each command's failure says `backfill: …` and `next: …`", arguments: [
        (["run", "/nonexistent/job.yaml"], 2, "does not exist"),
        (["run", "--workers", "0", "x.yaml"], 2, "--workers must be from 1 to 1024"),
        (["plan", "/nonexistent/job.yaml"], 2, "does not exist"),
        (["verify", "/nonexistent/job.yaml"], 2, "does not exist"),
        (["rehearse", "/nonexistent/job.yaml"], 2, "does not exist"),
        (["status", "--database", "postgresql://nobody:Pa55-Secret@127.0.0.1:9/none"], 1, "127.0.0.1"),
        (["pause", "somejob", "--database", "postgresql://nobody@127.0.0.1:9/none"], 1, "127.0.0.1"),
        (["status", "--frobnicate"], 2, "--frobnicate"),
        (["no-such-command"], 2, "no-such-command"),
    ])
    func failures(arguments: [String], code: Int32, expected: String) throws {
        let run = try backfill(arguments)
        #expect(run.code == code, "\(run.err)")
        let lines = run.err.split(separator: "\n")
        #expect(lines.first?.hasPrefix("backfill: ") == true, "\(run.err)")
        #expect(lines.last?.hasPrefix("next: ") == true, "\(run.err)")
        #expect(run.err.contains(expected), "\(run.err)")
        #expect(!run.err.contains("Pa55-Secret"))
    }

    @Test("a job the store does not know: exit 2, and next names `backfill status`")
    func unknownJob() throws {
        let (url, _) = try itemsDatabase("unknownjob", rows: 10)
        _ = try backfill(["run", try jobFile(itemsJob(name: "known")), "--database", url])
        for arguments in [["status", "nosuch"], ["pause", "nosuch"], ["resume", "nosuch"], ["cancel", "nosuch"]] {
            let run = try backfill(arguments + ["--database", url])
            #expect(run.code == 2)
            #expect(run.err.hasPrefix("backfill: no job named `nosuch`"), "\(run.err)")
            #expect(run.err.contains("next: `backfill status` lists the jobs"), "\(run.err)")
        }
    }

    @Test("verify with rows left: the count on stdout, exit 1, and next says to run the job")
    func verifyLeft() throws {
        let (url, _) = try itemsDatabase("verifyleft", rows: 100)
        let run = try backfill(["verify", try jobFile(itemsJob(name: "left", extra: "where: filled IS NULL")), "--database", url])
        #expect(run.code == 1)
        #expect(run.out.contains("left: 100 rows still match `where`"))
        #expect(run.err.hasPrefix("backfill: left: 100 rows still match") && run.err.contains("next: run the job"), "\(run.err)")
    }

    @Test("with --log-format json a refused command line is one JSON error object with exit_code and next", arguments: [
        (["run", "/nonexistent/job.yaml", "--log-format", "json"], [String: String]()),
        (["run", "--workers", "0", "--log-format=json", "x.yaml"], [:]),
        (["run", "x.yaml"], ["BACKFILL_LOG_FORMAT": "json", "BACKFILL_WORKERS": "many"]),
    ])
    func jsonRefusals(arguments: [String], environment: [String: String]) throws {
        let run = try backfill(arguments, environment: environment)
        #expect(run.code == 2)
        #expect(run.err.split(separator: "\n").count == 1, "\(run.err)")
        let event = try #require(run.events.first, "\(run.err)")
        #expect(event["event"] as? String == "error" && event["level"] as? String == "error")
        #expect(event["exit_code"] as? Int == 2)
        #expect((event["next"] as? String)?.isEmpty == false)
        #expect(event["message"] is String)
    }

    @Test("with --log-format json a signal and the summary are events; every stderr line is JSON")
    func jsonSignal() throws {
        let (url, db) = try itemsDatabase("jsonsignal", rows: 60_000)
        let job = try jobFile(itemsJob(name: "jsonsignal", extra: "throttle: {max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "jsonsignal") > 0 })
        kill(runner.pid, SIGTERM)
        #expect(runner.wait(timeout: 10) == 3, "\(runner.stderr)")
        let lines = runner.stderr.split(separator: "\n")
        #expect(runner.events.count == lines.count, "not JSON: \(lines.filter { !$0.hasPrefix("{") })")
        let signal = try #require(runner.events.first { $0["event"] as? String == "signal" })
        #expect(signal["signal"] as? String == "SIGTERM" && signal["job"] as? String == "jsonsignal")
        let last = try #require(runner.events.last)
        #expect(last["event"] as? String == "stop" && last["reason"] as? String == "signal")
        #expect(last["exit_code"] as? Int == 3)
        #expect((last["next"] as? String)?.contains("run again") == true)
    }

    @Test("with --log-format json a failed run ends with an error event carrying the summary, exit_code and next")
    func jsonFailure() throws {
        let (url, db) = try itemsDatabase("jsonfail", rows: 5_000)
        try db.execute("ALTER TABLE items ADD CONSTRAINT small CHECK (filled IS NULL OR filled < 5000)")
        let run = try backfill(["run", try jobFile(itemsJob(name: "jsonfail")), "--database", url, "--log-format", "json"])
        #expect(run.code == 1)
        #expect(run.events.count == run.err.split(separator: "\n").count, "\(run.err)")
        let last = try #require(run.events.last)
        #expect(last["event"] as? String == "error" && last["exit_code"] as? Int == 1)
        #expect((last["message"] as? String)?.contains("23514") == true, "\(last)")
        #expect((last["next"] as? String)?.contains("fix the cause") == true)
        #expect(last["batches"] is Int && last["rows"] is Int)
    }

    @Test("rows_done is the job's total in batch and done events, status and metrics; run_rows is this run's")
    func rowsDoneEverywhere() throws {
        let (url, db) = try itemsDatabase("rowsdone", rows: 40_000)
        let job = try jobFile(itemsJob(name: "rowsdone", extra: "throttle: {max_rows_per_second: 20000}"))
        let first = try backfill(["run", job, "--database", url, "--max-runtime", "1s"])
        #expect(first.code == 3, "\(first.err)")
        let before = rowsDone(db, job: "rowsdone")
        #expect(before > 0 && before < 40_000)

        let metrics = NSTemporaryDirectory() + "backfill-rowsdone-\(UUID().uuidString).prom"
        defer { unlink(metrics) }
        let second = try backfill(["run", job, "--database", url, "--log-format", "json", "--metrics-file", metrics])
        #expect(second.code == 0, "\(second.err)")
        let batches = second.events.filter { $0["event"] as? String == "batch" }
        let lastBatch = try #require(batches.last)
        #expect(lastBatch["rows_done"] as? Int == 40_000)
        #expect(lastBatch["run_rows"] as? Int == 40_000 - Int(before))
        #expect(batches.allSatisfy { ($0["rows_done"] as? Int ?? 0) == Int(before) + ($0["run_rows"] as? Int ?? -1) })
        let done = try #require(second.events.last)
        #expect(done["event"] as? String == "done")
        #expect(done["rows_done"] as? Int == 40_000 && done["run_rows"] as? Int == 40_000 - Int(before))
        #expect(done["rows"] as? Int == 40_000 - Int(before), "`rows` stays this run's, as before")

        let status = try backfill(["status", "rowsdone", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"rows_done\":40000"), "\(status.out)")
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(text.contains(#"backfill_rows_done{backfill_job="rowsdone"} 40000"#), "\(text)")
        #expect(text.contains(#"backfill_rows_total{backfill_job="rowsdone"} \#(40_000 - Int(before))"#), "\(text)")
    }
}
