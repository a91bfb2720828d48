import BackfillCore
import Foundation
import Testing

@Suite("Prometheus exposition")
struct MetricsTests {
    /// The text a run's metrics export after a start, batches, a retry and a throttle.
    private func exposition(jobs: [String]) throws -> String {
        let factory = PrometheusFactory()
        for job in jobs {
            let metrics = RunMetrics(job: job, factory: factory)
            metrics.record(RunEvent(.start(.init(table: "t", action: "update", rowsEstimate: nil, rowsDoneBefore: 0, batchSize: 500, target: .milliseconds(50),
                                                 keyIndex: "t_pkey", runner: "h:1", runID: "r", cdcOrigin: "backfill", cdcMessages: true,
                                                 mode: .run(workers: 1, ranges: 1))), job: job))
            metrics.record(RunEvent(.batch(.init(rows: 500, batchSize: 500, keys: 500, duration: .milliseconds(12.5), attempt: 1, lastKey: ["500"], range: 0,
                                                 rowsDone: 500, runRows: 500, nextBatchSize: 600, bound: .counted, walBytes: 8192, hotUpdateRatio: 0.5, worker: 0)), job: job))
            metrics.record(RunEvent(.retry(.init(reason: .lockTimeout, attempt: 1, delay: .milliseconds(50), source: .worker(0, nextBatchSize: 300))), job: job))
            metrics.record(RunEvent(.throttle(.init(cause: .rowBudget(wait: .milliseconds(250)), worker: 0)), job: job))
            metrics.record(RunEvent(.badRow(.init(key: ["7"], sqlstate: "22P02", message: "invalid input", detail: nil, range: 0, badRows: 1, worker: 0)), job: job))
        }
        let exporter = try MetricsExporter(registry: factory.registry, filePath: nil, port: nil)
        defer { exporter.stop() }
        return exporter.text
    }

    @Test("every series has # HELP and # TYPE, its name documented in RunMetrics.help, before its samples")
    func helpAndType() throws {
        let lines = try exposition(jobs: ["a"]).split(separator: "\n").map(String.init)
        let typed = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }.map(String.init)
        #expect(Set(typed) == Set(RunMetrics.help.keys), "exported: \(typed.sorted())")
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = String(line.split(separator: " ")[2])
            #expect(index > 0 && lines[index - 1] == "# HELP \(name) \(RunMetrics.help[name] ?? "?")", "\(name): \(index > 0 ? lines[index - 1] : "")")
        }
        let samples = lines.filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(samples.count > 20)
        for sample in samples {
            let family = String(sample.prefix { $0 != "{" && $0 != " " })
            #expect(typed.contains { family == $0 || family.hasPrefix($0 + "_") }, "a sample with no # TYPE: \(sample)")
        }
    }

    @Test("each job's series carry backfill_job with its name, never a `job` label Prometheus would rename")
    func jobLabel() throws {
        let samples = try exposition(jobs: ["alpha", "beta"]).split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(samples.allSatisfy { $0.contains("{backfill_job=\"alpha\"") || $0.contains("{backfill_job=\"beta\"") }, "\(samples)")
        #expect(!samples.contains { $0.contains("{job=") || $0.contains(",job=") })
        #expect(samples.contains { $0.hasPrefix("backfill_rows_total{backfill_job=\"beta\"} 500") }, "\(samples)")
    }
}
