import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing
import Yams

@Suite("Operator experience: logs, progress, metrics, rehearsal, recipes")
struct OperatorTests {
    @Test("JSON logs: one object per line for every event, numbers as numbers, no password")
    func jsonLogs() throws {
        let (url, _) = try itemsDatabase("jsonlogs", rows: 20_000)
        var database = url
        var password = "never-shown"
        if let cluster = try TestDatabases.localCluster() {
            database = cluster.url(database: ConnectionInfo.parse(url)["dbname"] ?? "")
            password = cluster.password
        }
        let job = try jobFile(itemsJob(name: "jsonlogs"))
        let run = try backfill(["run", job, "--database", database, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        let lines = run.err.split(separator: "\n")
        #expect(!lines.isEmpty)
        #expect(run.events.count == lines.count, "every stderr line is one JSON object")
        for event in run.events {
            #expect(event["ts"] is String && event["level"] is String && event["job"] as? String == "jsonlogs")
            #expect(["start", "batch", "retry", "throttle", "stop", "done", "error"].contains(event["event"] as? String ?? ""))
        }
        let done = try #require(run.events.last)
        #expect(done["event"] as? String == "done" && done["rows"] as? Int == 20_000 && done["rows_per_second"] is Double)
        #expect(done["exit_code"] as? Int == 0 && done["next"] as? String == "nothing: the job is done")
        #expect(!run.err.contains(password))
    }

    @Test("on a terminal the progress line is redrawn in place with %, rate, ETA and state; the summary says what next")
    func terminalProgress() throws {
        let (url, _) = try itemsDatabase("tty", rows: 50_000)
        let job = try jobFile(itemsJob(name: "tty", extra: "throttle: {max_rows_per_second: 25000}"))
        let command = "\(backfillExecutable) run \(job) --database \"\(url)\""
        let run = try CLIProcess.external("/usr/bin/script", ["-qfec", command, "/dev/null"])
        #expect(run.wait(timeout: 60) == 0, "\(run.stdout)")
        let screen = run.stdout
        #expect(screen.contains("\r\u{1B}[2K"), "no redraw in: \(screen.prefix(500))")
        #expect(screen.contains("tty  "), "\(screen.prefix(500))")
        #expect(screen.contains("rows/s") && screen.contains("ETA") && screen.contains("running") && screen.contains("%"))
        #expect(screen.contains("summary: tty: done rows=50000"))
        #expect(screen.contains("next: nothing: the job is done"))
    }

    @Test("without a terminal a plain progress line comes every 10 s; --progress never turns it off")
    func plainProgress() throws {
        let (url, db) = try itemsDatabase("plain", rows: 60_000)
        let job = try jobFile(itemsJob(name: "plain", extra: "throttle: {max_rows_per_second: 5000}\nbatch: {size: 500, max: 1000}"))
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 0)
        let progress = run.err.split(separator: "\n").filter { $0.hasPrefix("plain ") && $0.contains("rows/s") }
        #expect(progress.count >= 1, "\(run.err)")
        #expect(!run.err.contains("\u{1B}[2K"))
        try db.execute("UPDATE items SET filled = NULL, writes = 0")
        let quiet = try backfill(["run", job, "--database", url, "--restart", "--progress", "never"])
        #expect(quiet.code == 0)
        #expect(!quiet.err.contains("rows/s,") && !quiet.err.split(separator: "\n").contains { $0.hasPrefix("plain ") })
        #expect(quiet.err.contains("summary: plain: done"))
    }

    @Test("every exit path prints a summary and the next step")
    func summaries() throws {
        let (url, db) = try itemsDatabase("summaries", rows: 50_000)
        let job = try jobFile(itemsJob(name: "sums", extra: "throttle: {max_rows_per_second: 20000}"))
        let boxed = try backfill(["run", job, "--database", url, "--max-runtime", "1s"])
        #expect(boxed.code == 3)
        #expect(boxed.err.contains("summary: sums: pending rows="))
        #expect(boxed.err.contains("next: run again to resume"))
        try db.execute("ALTER TABLE items ADD CONSTRAINT no_big CHECK (filled IS NULL OR filled < 60000)")
        let failed = try backfill(["run", job, "--database", url])
        #expect(failed.code == 1)
        #expect(failed.err.contains("summary: sums: failed"))
        #expect(failed.err.contains("next: fix the cause above"))
    }

    @Test("--metrics-file is written atomically and parses; /metrics answers during a run")
    func metrics() throws {
        let (url, _) = try itemsDatabase("metrics", rows: 60_000)
        let file = NSTemporaryDirectory() + "backfill-\(UUID().uuidString).prom"
        defer { unlink(file) }
        let port = try LocalPostgres.freePort()
        let job = try jobFile(itemsJob(name: "metered", extra: "throttle: {max_rows_per_second: 20000}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--metrics-file", file, "--metrics-port", String(port)])
        var scraped: String?
        #expect(waitFor(20) {
            scraped = httpGet(port: port, path: "/metrics")
            return scraped?.contains("backfill_rows_total") == true
        })
        #expect(scraped?.hasPrefix("HTTP/1.0 200 OK") == true)
        #expect(scraped?.contains("# TYPE backfill_batch_duration_seconds histogram") == true)
        #expect(httpGet(port: port, path: "/nope")?.hasPrefix("HTTP/1.0 404") == true)
        #expect(runner.wait(timeout: 60) == 0, "\(runner.stderr)")

        let text = try String(contentsOfFile: file, encoding: .utf8)
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            #expect(parts.count == 2, "bad sample line: \(line)")
            if parts.count == 2 { samples[String(parts[0])] = Double(parts[1]) }
        }
        #expect(samples[#"backfill_rows_total{backfill_job="metered"}"#] == 60_000)
        #expect((samples[#"backfill_batches_total{backfill_job="metered"}"#] ?? 0) > 1)
        #expect(samples[#"backfill_progress_ratio{backfill_job="metered"}"#] == 1)
        #expect(samples[#"backfill_state{backfill_job="metered",state="done"}"#] == 1)
        #expect(samples[#"backfill_state{backfill_job="metered",state="running"}"#] == 0)
        #expect((samples[#"backfill_throttled_seconds_total{backfill_job="metered",reason="max_rows_per_second"}"#] ?? 0) > 0)
        #expect((samples[#"backfill_last_success_timestamp_seconds{backfill_job="metered"}"#] ?? 0) > 1_700_000_000)
        #expect(samples.keys.contains { $0.hasPrefix("backfill_batch_duration_seconds_bucket") })
        #expect(!FileManager.default.fileExists(atPath: file + ".tmp.\(runner.pid)"))
    }

    @Test("rehearse: baseline then the job under traffic, a JSON report, gates, and a dry run that changes nothing")
    func rehearse() throws {
        let (url, db) = try itemsDatabase("rehearse", rows: 40_000)
        let job = try jobFile(itemsJob(name: "rehearsed", extra: "where: filled IS NULL"))
        let dry = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "1s", "--dry-run", "--format", "json", "--rows-estimate", "4000000"])
        #expect(dry.code == 0, "\(dry.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(dry.out.utf8)) as? [String: Any])
        #expect(report["dry_run"] as? Bool == true)
        #expect(report["rows"] as? Int == 40_000)
        #expect(((report["baseline"] as? [String: Any])?["transactions"] as? Int ?? 0) > 0)
        #expect(((report["during"] as? [String: Any])?["transactions"] as? Int ?? 0) > 0)
        let estimate = try #require(report["production_seconds_estimate"] as? Double)
        let rate = try #require(report["rows_per_second"] as? Double)
        #expect(abs(estimate - 4_000_000 / rate) < 1)
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled IS NOT NULL OR writes > 0").first?["n"].int64 == 0)
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true)

        let gated = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "1s", "--max-lock-wait-ms", "0.001", "--max-live-p99-ms", "100000"])
        #expect(gated.code == 1, "\(gated.out) \(gated.err)")
        #expect(gated.out.contains("gate lock wait ≤ 0.0 ms: FAILED"))
        #expect(gated.out.contains("gate live p99 ≤ 100000.0 ms: passed"))
        #expect(gated.out.contains("live traffic"))
        try expectExactlyOnce(db, rows: 40_000)
    }

    @Test("every deploy recipe is valid YAML")
    func deployRecipes() throws {
        let root = packageRoot + "/deploy"
        let files = FileManager.default.enumerator(atPath: root)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") } ?? []
        #expect(files.count >= 5)
        for file in files {
            let text = try String(contentsOfFile: root + "/" + file, encoding: .utf8)
            let document = try Yams.load(yaml: text) as? [String: Any]
            #expect(document != nil, "\(file) is not a YAML mapping")
        }
        let cron = try Yams.load(yaml: String(contentsOfFile: root + "/kubernetes/cronjob.yaml", encoding: .utf8)) as? [String: Any]
        let spec = cron?["spec"] as? [String: Any]
        #expect(spec?["concurrencyPolicy"] as? String == "Forbid")
        #expect(String(describing: spec).contains("--max-runtime"))
    }
}

extension CLIProcess {
    /// Runs another program (such as `script`) with output captured like the CLI's.
    static func external(_ executable: String, _ arguments: [String]) throws -> CLIProcess {
        try CLIProcess(arguments, executable: executable)
    }
}
