import BackfillCore
import Foundation
import PostgresClient
import Testing

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

        // A run that retries (a row held locked past lock_ms) and throttles (a rate limit), so
        // that every series, the per-reason ones included, is exported.
        let (url, db) = try itemsDatabase("dashboard", rows: 30_000)
        let file = NSTemporaryDirectory() + "backfill-\(UUID().uuidString).prom"
        defer { unlink(file) }
        let holder = try Connection(url)
        try holder.execute("BEGIN")
        try holder.query("SELECT id FROM items WHERE id = 1 FOR UPDATE")
        let job = try jobFile(itemsJob(name: "dashboard", extra: """
            timeouts: {lock_ms: 50}
            retry: {max_attempts: 30, backoff_ms: 20, max_backoff_ms: 200}
            throttle: {max_rows_per_second: 30000}
            """))
        let runner = try CLIProcess(["run", job, "--database", url, "--metrics-file", file])
        usleep(1_000_000)
        try holder.execute("COMMIT")
        #expect(runner.wait(timeout: 60) == 0, "\(runner.stderr)")
        try expectExactlyOnce(db, rows: 30_000)

        let exported = Set(try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }.map {
            String($0.prefix { $0 != "{" && $0 != " " })
        })
        #expect(exported.contains("backfill_retries_total") && exported.contains("backfill_throttled_seconds_total"), "\(exported.sorted())")
        #expect(queried.subtracting(exported).isEmpty, "queried but not exported: \(queried.subtracting(exported).sorted())")
    }
}
