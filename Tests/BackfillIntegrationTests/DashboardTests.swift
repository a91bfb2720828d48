import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// CI must run the real-Prometheus test; elsewhere it is skipped, saying why, without the program.
private let prometheusRequired = ProcessInfo.processInfo.environment["CI"] == "true"
private let prometheusInstalled = FileManager.default.isExecutableFile(atPath: LocalPrometheus.program)

/// `promtool check metrics` on `text`: its exit code and what it printed.
private func promtoolCheck(_ text: String) throws -> (code: Int32, output: String) {
    let input = NSTemporaryDirectory() + "backfill-promtool-\(UUID().uuidString).prom"
    try text.write(toFile: input, atomically: true, encoding: .utf8)
    defer { unlink(input) }
    let tool = Process()
    tool.executableURL = URL(fileURLWithPath: LocalPrometheus.promtool)
    tool.arguments = ["check", "metrics"]
    tool.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: input))
    let output = Pipe()
    tool.standardOutput = output
    tool.standardError = output
    try tool.run()
    let printed = output.fileHandleForReading.readDataToEndOfFile()
    tool.waitUntilExit()
    return (tool.terminationStatus, String(decoding: printed, as: UTF8.self))
}

@Suite("Grafana dashboard")
struct DashboardTests {
    /// Every PromQL expression (and variable query) in the dashboard.
    private func queries(_ node: Any) -> [String] {
        switch node {
        case let object as [String: Any]:
            return object.flatMap { key, value -> [String] in
                if ["expr", "definition"].contains(key), let text = value as? String { return [text] }
                if key == "query", let text = value as? String { return [text] }
                return queries(value)
            }
        case let array as [Any]: return array.flatMap(queries)
        default: return []
        }
    }

    /// A run of job `name` over `rows` rows that retries (row 1 held locked past `lock_ms` until
    /// the run has retried on it) and throttles (`rowsPerSecond`), so that every series, the per-reason ones
    /// included, is exported; `flags` are added to `run`.
    private func retryingThrottledRun(_ name: String, rows: Int, rowsPerSecond: Int, flags: [String]) throws -> (runner: CLIProcess, db: Connection) {
        let (url, db) = try itemsDatabase(name, rows: rows)
        let holder = try Connection(url)
        try holder.execute("BEGIN")
        try holder.query("SELECT id FROM items WHERE id = 1 FOR UPDATE")
        let job = try jobFile(itemsJob(name: name, extra: """
            timeouts: {lock_ms: 50}
            retry: {max_attempts: 30, backoff_ms: 20, max_backoff_ms: 200}
            throttle: {max_rows_per_second: \(rowsPerSecond)}
            """))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"] + flags)
        let retried = waitFor(30) { runner.events.contains { $0["event"] as? String == "retry" } }
        try holder.execute("COMMIT")
        try #require(retried, "the run never retried on the held row: \(runner.stderr.suffix(2000))")
        return (runner, db)
    }

    /// The dashboard's variables as Grafana fills them in for one job (rate interval: 4 × the 1 s
    /// scrape interval, rounded up as Grafana's minimum of 15 s).
    private func filledIn(_ expression: String, job: String) -> String {
        expression.replacingOccurrences(of: "$__rate_interval", with: "15s").replacingOccurrences(of: "$job", with: job)
    }

    /// Every `expr` of the dashboard's panels.
    private func expressions(_ node: Any) -> [String] {
        switch node {
        case let object as [String: Any]:
            return object.flatMap { key, value -> [String] in key == "expr" ? [value as? String].compactMap { $0 } : expressions(value) }
        case let array as [Any]: return array.flatMap(expressions)
        default: return []
        }
    }

    /// An instant query's result vector (each element's `metric` labels), or nil if it failed.
    private func instantQuery(_ prometheus: LocalPrometheus, _ query: String) -> [[String: String]]? {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        guard let body = prometheus.get("/api/v1/query?query=\(encoded)"),
              let answer = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], answer["status"] as? String == "success",
              let result = (answer["data"] as? [String: Any])?["result"] as? [[String: Any]] else { return nil }
        return result.map { ($0["metric"] as? [String: String]) ?? [:] }
    }

    /// A label's values as the API lists them (`match[]` limits them to one series' name).
    private func labelValues(_ prometheus: LocalPrometheus, _ label: String, of series: String) -> [String]? {
        let match = "match%5B%5D=\(series)"
        guard let body = prometheus.get("/api/v1/label/\(label)/values?\(match)"),
              let answer = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
        return answer["data"] as? [String]
    }

    @Test("a real Prometheus scraping --metrics-port: every dashboard expression returns data for the job, the picker lists it, promtool accepts the scrape and the textfile",
          .enabled(if: prometheusInstalled || prometheusRequired, "prometheus is not installed: `apt-get install prometheus` (.ci/run installs it; under CI=true this test fails instead)"))
    func realPrometheus() throws {
        try #require(prometheusInstalled, "CI=true and \(LocalPrometheus.program) is missing: .ci/run installs Debian's prometheus")
        let data = try Data(contentsOf: URL(fileURLWithPath: packageRoot + "/deploy/grafana/backfill.json"))
        let dashboard = try JSONSerialization.jsonObject(with: data)
        let panelQueries = expressions(dashboard)
        #expect(panelQueries.count >= 10)
        let picker = try #require(queries(dashboard).first { $0.hasPrefix("label_values(") }, "the dashboard's job picker")
        let pickerParts = try #require(try NSRegularExpression(pattern: #"^label_values\((\w+), *(\w+)\)$"#)
            .firstMatch(in: picker, range: NSRange(picker.startIndex..., in: picker)), "picker: \(picker)")
        let pickerSeries = String(picker[Range(pickerParts.range(at: 1), in: picker)!]), pickerLabel = String(picker[Range(pickerParts.range(at: 2), in: picker)!])

        // Long enough to be scraped every second for a while; stopped with SIGINT once queried.
        let metricsPort = try LocalPostgres.freePort()
        let prometheus = try LocalPrometheus(scraping: ["127.0.0.1:\(metricsPort)"])
        defer { prometheus.stop() }
        let file = NSTemporaryDirectory() + "backfill-\(UUID().uuidString).prom"
        defer { unlink(file) }
        let (runner, db) = try retryingThrottledRun("scraped", rows: 300_000, rowsPerSecond: 5000,
                                                    flags: ["--metrics-port", String(metricsPort), "--metrics-bind", "127.0.0.1", "--metrics-file", file])
        defer { if runner.process.isRunning { kill(runner.pid, SIGKILL) } }

        let scraped = "backfill_job=\"scraped\""
        #expect(waitFor(40) {
            ["backfill_retries_total", "backfill_throttled_seconds_total", "backfill_rows_total"].allSatisfy { (instantQuery(prometheus, "\($0){\(scraped)}")?.isEmpty == false) }
        }, "Prometheus never had the run's series: \(runner.stderr.suffix(2000))")
        usleep(4_000_000)  // a few more scrapes, so that every rate window holds two samples or more
        #expect(runner.process.isRunning, "the run is still being scraped")

        for expression in panelQueries {
            let query = filledIn(expression, job: "scraped")
            #expect(!query.contains("$"), "a dashboard variable this test does not fill in: \(query)")
            let result = instantQuery(prometheus, query)
            #expect(result?.isEmpty == false, "no data for: \(query)")
            #expect(result?.allSatisfy { $0["backfill_job"] == nil || $0["backfill_job"] == "scraped" } == true, "\(query): \(result ?? [])")
        }
        #expect(labelValues(prometheus, pickerLabel, of: pickerSeries) == ["scraped"], "the picker's values")
        #expect(labelValues(prometheus, "exported_job", of: pickerSeries) == [], "no label was renamed by the scrape")
        #expect(labelValues(prometheus, "job", of: pickerSeries) == ["backfill"], "`job` is the scrape job's")

        let scrape = try #require(httpGet(port: metricsPort, path: "/metrics").flatMap(httpStatusAndBody)?.body)
        #expect(scrape.contains("# HELP backfill_rows_total "), "\(scrape.prefix(500))")
        let onScrape = try promtoolCheck(scrape)
        #expect(onScrape.code == 0 && onScrape.output.isEmpty, "promtool check metrics on the scrape: \(onScrape.output)")

        kill(runner.pid, SIGINT)
        #expect(runner.wait(timeout: 30) == 3, "\(runner.stderr.suffix(2000))")
        let textfile = try String(contentsOfFile: file, encoding: .utf8)
        #expect(textfile.contains("backfill_rows_total{\(scraped)}"), "\(textfile.prefix(500))")
        let onFile = try promtoolCheck(textfile)
        #expect(onFile.code == 0 && onFile.output.isEmpty, "promtool check metrics on --metrics-file: \(onFile.output)")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes > 1").first?["n"].int64 == 0)
    }

    @Test("every series deploy/grafana/backfill.json queries is one a run exports (histograms as _bucket/_sum/_count)")
    func seriesExported() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: packageRoot + "/deploy/grafana/backfill.json"))
        let dashboard = try JSONSerialization.jsonObject(with: data)
        let pattern = try NSRegularExpression(pattern: "backfill_[a-z0-9_]+")
        let queried = Set(queries(dashboard).flatMap { text in
            pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { String(text[Range($0.range, in: text)!]) }
        }).subtracting([RunMetrics.jobLabel])
        #expect(queried.isSuperset(of: ["backfill_progress_ratio", "backfill_rows_total", "backfill_batch_duration_seconds_bucket",
                                        "backfill_batch_target_seconds", "backfill_retries_total", "backfill_throttled_seconds_total", "backfill_state"]))

        let file = NSTemporaryDirectory() + "backfill-\(UUID().uuidString).prom"
        defer { unlink(file) }
        let (runner, db) = try retryingThrottledRun("dashboard", rows: 30_000, rowsPerSecond: 30_000, flags: ["--metrics-file", file])
        #expect(runner.wait(timeout: 60) == 0, "\(runner.stderr)")
        try expectExactlyOnce(db, rows: 30_000)

        let exported = Set(try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }.map {
            String($0.prefix { $0 != "{" && $0 != " " })
        })
        #expect(exported.contains("backfill_retries_total") && exported.contains("backfill_throttled_seconds_total"), "\(exported.sorted())")
        #expect(queried.subtracting(exported).isEmpty, "queried but not exported: \(queried.subtracting(exported).sorted())")
    }
}
