import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import PostgresClient
import Testing

extension XMLElement {
    /// An attribute's value (FoundationXML's `attribute(forName:)` misses them on elements in a
    /// default namespace, as inline SVG's are).
    func attr(_ name: String) -> String? { attributes?.first { $0.name == name }?.stringValue }
}

@Suite("Staging rehearsal: always measures, gates need samples, the HTML report")
struct RehearsalTests {
    @Test("rehearse --report: one HTML page that parses, a chart point per second measured, the JSON's numbers")
    func htmlReport() throws {
        let (url, db) = try itemsDatabase("report", rows: 60_000)
        let job = try jobFile(itemsJob(name: "reported", extra: "where: filled IS NULL\nthrottle: {max_rows_per_second: 30000}"))
        let path = NSTemporaryDirectory() + "backfill-report-\(UUID().uuidString).html"
        defer { unlink(path) }
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "2s", "--format", "json",
                                "--max-live-p99-ms", "10000", "--report", path])
        #expect(run.code == 0, "\(run.err)")
        #expect(run.err.contains("report written to \(path)"))
        try expectExactlyOnce(db, rows: 60_000)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        let baseline = try #require(json["baseline"] as? [String: Any]), during = try #require(json["during"] as? [String: Any])
        let baselineSeries = try #require(baseline["series"] as? [[String: Any]]), duringSeries = try #require(during["series"] as? [[String: Any]])
        let baselineSeconds = try #require(baseline["seconds"] as? Double), duringSeconds = try #require(during["seconds"] as? Double)
        #expect(baselineSeries.count == max(1, Int(baselineSeconds.rounded())))
        #expect(duringSeries.count == max(1, Int(duringSeconds.rounded())))
        #expect(duringSeconds > 1.5, "a 60,000-row job at 30,000 rows/s takes about 2 s")
        #expect(duringSeries.reduce(0) { $0 + ($1["transactions"] as? Int ?? 0) } == during["transactions"] as? Int)
        let batchSeries = try #require(json["batch_series"] as? [[String: Any]])
        #expect(batchSeries.count == json["batches"] as? Int)

        let html = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="), "self-contained, no scripts")
        let document = try XMLDocument(xmlString: html)
        func nodes(_ xpath: String) throws -> [XMLElement] { try document.nodes(forXPath: xpath).compactMap { $0 as? XMLElement } }
        /// Points drawn for a series of a chart: polyline vertices and lone dots.
        func points(chart: String, series: String) throws -> Int {
            let group = "//*[@data-chart='\(chart)']//*[@data-series='\(series)']"
            let lines = try nodes(group + "/*[local-name()='polyline']").map { $0.attr("points")?.split(separator: " ").count ?? 0 }
            return lines.reduce(0, +) + (try nodes(group + "/*[local-name()='circle']").count)
        }
        let seconds = baselineSeries.count + duringSeries.count
        #expect(try points(chart: "tps", series: "live TPS") == seconds)
        let withLatency = (baselineSeries + duringSeries).filter { $0["p99_ms"] is Double }.count
        #expect(withLatency >= seconds - 1)
        for series in ["p50", "p99", "max"] { #expect(try points(chart: "latency", series: series) == withLatency, "\(series)") }
        #expect(try points(chart: "batches", series: "batch (one dot each)") == batchSeries.count)

        func field(_ name: String) throws -> String? { try nodes("//*[@data-field='\(name)']").first?.stringValue }
        for (window, figures) in [("baseline", baseline), ("during", during)] {
            #expect(try field("\(window).transactions") == String(figures["transactions"] as? Int ?? -1))
            for key in ["p50_ms", "p99_ms", "max_ms"] {
                #expect(try field("\(window).\(key)") == String(format: "%.2f", figures[key] as? Double ?? -1), "\(window).\(key)")
            }
            #expect(try field("\(window).tps") == String(format: "%.0f", figures["tps"] as? Double ?? -1))
        }
        #expect(try field("rows") == "60000" && json["rows"] as? Int == 60_000)
        #expect(try field("batches") == String(json["batches"] as? Int ?? -1))
        #expect(try nodes("//*[@data-verdict]").first?.attr("data-verdict") == "PASSED")
        #expect(try nodes("//*[@data-gate='live p99']").count == 1)
    }

    @Test("rehearse on a job that is already done walks every key again, on a checkpoint of its own; the job's stays")
    func alwaysMeasures() throws {
        let (url, db) = try itemsDatabase("remeasure", rows: 30_000)
        let job = try jobFile(itemsJob(name: "remeasured", extra: "where: filled IS NULL"))
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "1s", "--format", "json"])
        #expect(run.code == 0, "\(run.err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        #expect(json["rehearsal_job"] as? String == "remeasured.rehearsal")
        #expect((json["batches"] as? Int ?? 0) >= 2, "the walk covers every key: 30,000 keys in batches of at most 1,000 at first")
        #expect(json["rows"] as? Int == 0, "every row already filled: nothing matches `where`")
        #expect(json["outcome"] as? String == "done")
        try expectExactlyOnce(db, rows: 30_000)
        let jobs = try db.query("SELECT name, state, rows_done FROM backfill.jobs ORDER BY name").rows
        #expect(jobs.map { $0["name"].string } == ["remeasured"], "the rehearsal's checkpoint is removed once done")
        #expect(jobs.first?["state"].string == "done" && jobs.first?["rows_done"].int64 == 30_000)
    }

    @Test("the default traffic measures its waits for the batches' row locks apart from its latency, and the lock wait gate judges them")
    func lockWaits() throws {
        let (url, _) = try itemsDatabase("lockwaits", rows: 3_000)
        // Batches of 150 rows that sleep 1 ms (2 here) a row: each holds 5 % of the table locked
        // for about 300 ms (the watchdog, at target_ms 500, lets them), so live clients wait.
        let job = try jobFile("""
            name: slow-locks
            table: items
            key: [id]
            where: filled IS NULL
            set:
              filled: id * 2 + length(pg_sleep(0.001)::text)
            batch: {size: 150, min: 150, max: 150, target_ms: 500}
            """)
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "2", "--baseline", "1s", "--format", "json", "--max-lock-wait-ms", "20"])
        #expect(run.code == 1, "the gate fails: \(run.out) \(run.err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        let baseline = try #require(json["baseline"] as? [String: Any]), during = try #require(json["during"] as? [String: Any])
        // Before the job only the clients themselves meet on a row, each for one short transaction.
        #expect(try #require(baseline["max_lock_wait_ms"] as? Double) < 250, "\(baseline)")
        let waits = try #require(during["lock_waits"] as? Int), worst = try #require(during["max_lock_wait_ms"] as? Double)
        #expect(waits >= 1 && worst > 50 && worst <= 2_000, "\(during)")
        let slowest = try #require(during["max_ms"] as? Double)
        #expect(worst <= slowest, "a wait is part of its transaction's latency")
        let gate = try #require((json["gates"] as? [[String: Any]])?.first)
        #expect(gate["name"] as? String == "lock wait" && gate["measured_ms"] as? Double == worst && gate["passed"] as? Bool == false, "\(gate)")
    }

    @Test("a gate over a job window with too few live transactions fails, saying why; the baseline's worst latency is `max ms`")
    func tooFewSamples() throws {
        let (url, _) = try itemsDatabase("fewsamples", rows: 10)
        let job = try jobFile(itemsJob(name: "few"))
        let traffic = NSTemporaryDirectory() + "backfill-traffic-\(UUID().uuidString).sql"
        try "SELECT pg_sleep(0.2)".write(toFile: traffic, atomically: true, encoding: .utf8)
        defer { unlink(traffic) }
        let run = try backfill(["rehearse", job, "--database", url, "--clients", "1", "--baseline", "1s", "--traffic-sql", traffic, "--max-live-p99-ms", "100000"])
        #expect(run.code == 1, "\(run.out) \(run.err)")
        #expect(run.out.contains("gate live p99 ≤ 100000.0 ms: FAILED (too few samples:"), "\(run.out)")
        #expect(run.out.contains("  max ms ") && !run.out.contains("lock wait)"))
        #expect(run.out.contains("  lock waits          -                   -"), "the operator's traffic cannot tell its lock waits: \(run.out)")
    }
}
