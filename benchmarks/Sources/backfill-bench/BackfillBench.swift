import ArgumentParser
import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient

/// Measures throughput and lock hold time of Backfill side by side with one big UPDATE and the
/// usual batching loops, under live write traffic, and writes the results.
@main
struct BackfillBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backfill-bench",
        abstract: "Benchmark Backfill against one UPDATE, OFFSET pagination and the row-list CTE, under live traffic.")

    @Option(help: "Rows in the table.") var rows = 2_000_000
    @Option(help: "Live clients updating random rows during each strategy.") var liveClients = 4
    @Option(help: "PostgreSQL to use (default: a throwaway local cluster with default durability).") var database: String?
    @Option(help: "Seconds of live traffic alone, for the baseline.") var baseline: Double = 10
    @Option(help: "Also run every strategy at these table sizes, e.g. 250000,1000000,4000000.") var series: String?
    @Option(help: "Skip OFFSET pagination above this many rows in the series (its cost grows with the square of the table).") var offsetLimit = 2_000_000
    @Option(help: "Only these strategies (comma-separated): \(Strategy.allCases.map(\.rawValue).joined(separator: ", ")).") var strategies: String?
    @Option(help: "Folder for RESULTS.md and results/ (latest.json and the SVG charts).") var outputDir = "benchmarks"
    @Flag(help: "Do not rewrite RESULTS.md (smoke runs).") var noMarkdownFile = false
    @Flag(help: "Also run the strategies without live traffic (OFFSET excepted), for raw throughput.") var quietPass = false
    @Option(help: "Also run one UPDATE and Backfill's defaults under this many live clients (8 on 2 cores: heavy CPU contention); 0 = skip.") var contentionClients = 0
    @Option(help: "Also rehearse Backfill's defaults on a table of this many rows under `backfill rehearse`'s default traffic (4 clients, a 5 s baseline); 0 = skip.") var rehearsalRows = 0

    func run() throws {
        let selected = try strategies.map { list in
            try list.split(separator: ",").map { name in
                guard let s = Strategy(rawValue: String(name)) else { throw ValidationError("unknown strategy \(name)") }
                return s
            }
        } ?? Strategy.allCases
        var cluster: LocalPostgres?
        let conninfo: String
        if let database {
            conninfo = database
        } else {
            log("starting a throwaway PostgreSQL cluster (default durability)…")
            cluster = try LocalPostgres.start(durable: true)
            conninfo = cluster!.conninfo()
        }
        defer { cluster?.stop() }
        let bench = Bench(conninfo: conninfo, clients: liveClients)

        let main = try bench.measure(rows: rows, strategies: selected, baselineSeconds: baseline)
        let quiet = quietPass
            ? try Bench(conninfo: conninfo, clients: 0).measure(rows: rows, strategies: selected.filter { $0 != .offset }, baselineSeconds: 0)
            : nil
        let contention = contentionClients > 0
            ? try Bench(conninfo: conninfo, clients: contentionClients).measure(
                rows: rows, strategies: selected.filter { [.singleUpdate, .backfillDefaults].contains($0) }, baselineSeconds: min(baseline, 5))
            : nil
        let rehearsal = rehearsalRows > 0 ? try bench.rehearse(rows: rehearsalRows) : nil
        var seriesRuns: [SizeRun] = []
        if let series {
            for size in series.split(separator: ",").compactMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                let chosen = selected.filter { $0 != .offset || size <= offsetLimit }
                seriesRuns.append(try bench.measure(rows: size, strategies: chosen, baselineSeconds: min(baseline, 3)))
            }
        }
        let report = Report(
            date: RunEvent.timestamp(Date()), command: (["swift run -c release backfill-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " "),
            machine: try bench.machine(), main: main, quiet: quiet, contention: contention, contentionClients: contentionClients,
            rehearsal: rehearsal, series: seriesRuns, offsetLimit: offsetLimit, liveClients: liveClients)
        print(report.markdown)
        let results = outputDir + "/results"
        try FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: results + "/latest.json"))
        for chart in report.charts {
            try chart.svg.write(toFile: results + "/" + chart.file, atomically: true, encoding: .utf8)
        }
        if !noMarkdownFile {
            try report.markdown.write(toFile: outputDir + "/RESULTS.md", atomically: true, encoding: .utf8)
        }
    }
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("bench: \(text)\n".utf8))
}

/// One strategy's figures.
struct StrategyResult: Encodable, Sendable {
    var strategy: Strategy
    var title: String
    var rows: Int
    var seconds: Double
    var rowsPerSecond: Double
    var ratioToSingleUpdate: Double?
    var batches: Int
    var batchP50Ms: Double
    var batchP99Ms: Double
    var batchMaxMs: Double
    var live: TrafficFigures?
    var walBytes: Int64
    var first10pctBatchP50Ms: Double
    var last10pctBatchP50Ms: Double
    /// Backfill only: seconds from the last batch to `done`, the full-scan check that no row still matches `where`.
    var verifySeconds: Double?

    enum CodingKeys: String, CodingKey {
        case strategy, title, rows, seconds, batches, live
        case rowsPerSecond = "rows_per_second", ratioToSingleUpdate = "ratio_to_single_update"
        case batchP50Ms = "batch_p50_ms", batchP99Ms = "batch_p99_ms", batchMaxMs = "batch_max_ms", walBytes = "wal_bytes"
        case first10pctBatchP50Ms = "first_10pct_batch_p50_ms", last10pctBatchP50Ms = "last_10pct_batch_p50_ms"
        case verifySeconds = "verify_seconds"
    }
}

/// All strategies at one table size.
struct SizeRun: Encodable, Sendable {
    var rows: Int
    var tableBytes: Int64
    var baseline: TrafficFigures?
    var results: [StrategyResult]

    enum CodingKeys: String, CodingKey { case rows, baseline, results, tableBytes = "table_bytes" }
}

struct Bench {
    let conninfo: String
    let clients: Int

    func admin() throws -> Connection { try Connection(conninfo, applicationName: "backfill-bench") }

    /// A fresh, identical table: recreated, VACUUM ANALYZEd, then CHECKPOINT; the checkpoint store too.
    func seed(rows: Int) throws -> Int64 {
        let db = try admin()
        let t = Strategy.table
        try db.execute(
            """
            DROP SCHEMA IF EXISTS backfill CASCADE;
            DROP TABLE IF EXISTS \(t);
            CREATE TABLE \(t) (
                id bigint PRIMARY KEY,
                balance numeric(12, 2) NOT NULL,
                email text NOT NULL,
                status text NOT NULL,
                balance_cents bigint,
                updated_at timestamptz NOT NULL,
                live_touches int NOT NULL DEFAULT 0
            );
            """)
        try db.query(
            """
            INSERT INTO \(t) (id, balance, email, status, updated_at)
            SELECT g, (g * 7919 % 1000000) / 100.0, 'customer.' || lpad(g::text, 8, '0') || '@mail.example.com',
                   (ARRAY['active', 'dormant', 'closed', 'pending'])[1 + g % 4],
                   timestamptz '2026-01-01' + g * interval '1 second'
            FROM generate_series(1, $1::bigint) g
            """, [.int(Int64(rows))])
        try db.execute("VACUUM ANALYZE \(t)")
        try db.execute("CHECKPOINT")
        return try db.query("SELECT pg_total_relation_size($1::regclass) AS b", [.text(t)]).first?["b"].int64 ?? 0
    }

    /// Live clients updating random rows (a column no strategy writes) as fast as they can.
    func liveTraffic(rows: Int) -> SyntheticTraffic {
        SyntheticTraffic(clients: clients, conninfo: conninfo, applicationName: "backfill-bench:live") { db in
            try db.query("UPDATE \(Strategy.table) SET live_touches = live_touches + 1 WHERE id = $1", [.int(Int64.random(in: 1...Int64(max(rows, 1))))])
            return nil  // its worst latency is the worst wait: one row per autocommitted UPDATE
        }
    }

    /// `backfill rehearse` of Backfill's defaults with its default traffic and clients, after a
    /// 5 s baseline, on a fresh table of `rows` rows.
    func rehearse(rows: Int) throws -> RehearsalReport {
        log("\(rows) rows: rehearsal with the default traffic…")
        _ = try seed(rows: rows)
        var options = RehearsalOptions(database: conninfo)
        options.baselineSeconds = 5
        let (report, outcome) = try Rehearsal.run(spec: try JobSpec.parse(yaml: Strategy.jobYAML(.backfillDefaults), file: "bench-rehearsal.yaml"), options: options)
        guard case .done = outcome else { throw BenchError("the rehearsal did not finish: \(outcome)") }
        return report
    }

    func measure(rows: Int, strategies: [Strategy], baselineSeconds: Double) throws -> SizeRun {
        log("\(rows) rows: seeding…")
        let bytes = try seed(rows: rows)
        var baseline: TrafficFigures?
        if clients > 0 {
            log("\(rows) rows: baseline, \(clients) live clients for \(baselineSeconds) s…")
            let traffic = liveTraffic(rows: rows)
            Thread.sleep(forTimeInterval: baselineSeconds)
            baseline = traffic.stop()
        }
        var results: [StrategyResult] = []
        for (i, strategy) in strategies.enumerated() {
            if i > 0 || baseline != nil { _ = try seed(rows: rows) }
            log("\(rows) rows: \(strategy.title)…")
            let db = try admin()
            let wal0 = try db.query("SELECT pg_current_wal_lsn()::text AS l").first!["l"].string!
            let traffic = clients > 0 ? liveTraffic(rows: rows) : nil
            let t0 = ContinuousClock.now
            let execution = try execute(strategy, conninfo: conninfo, rows: rows)
            let samples = execution.samples
            let d = (ContinuousClock.now - t0).components
            let seconds = Double(d.seconds) + Double(d.attoseconds) / 1e18
            let live = traffic?.stop()
            let wal = try db.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint AS b", [.text(wal0)]).first!["b"].int64!
            let wrong = try db.query(
                "SELECT count(*) AS n FROM \(Strategy.table) WHERE balance_cents IS DISTINCT FROM \(Strategy.setExpression)").first!["n"].int64!
            guard wrong == 0 else { throw BenchError("\(strategy.rawValue) left \(wrong) rows wrong; no figure reported") }
            let ms = samples.map(\.ms).sorted()
            func percentile(_ values: [Double], _ q: Double) -> Double {
                guard !values.isEmpty else { return 0 }
                return values[min(values.count - 1, max(0, Int((q * Double(values.count)).rounded(.up)) - 1))]
            }
            let first = samples.filter { $0.position <= 0.1 }.map(\.ms).sorted()
            let last = samples.filter { $0.position > 0.9 }.map(\.ms).sorted()
            var result = StrategyResult(
                strategy: strategy, title: strategy.title, rows: rows, seconds: seconds,
                rowsPerSecond: Double(rows) / seconds, ratioToSingleUpdate: nil, batches: samples.count,
                batchP50Ms: percentile(ms, 0.5), batchP99Ms: percentile(ms, 0.99), batchMaxMs: ms.last ?? 0,
                live: live, walBytes: wal, first10pctBatchP50Ms: percentile(first, 0.5), last10pctBatchP50Ms: percentile(last, 0.5),
                verifySeconds: execution.verifySeconds)
            if let single = results.first(where: { $0.strategy == .singleUpdate }) {
                result.ratioToSingleUpdate = result.rowsPerSecond / single.rowsPerSecond
            } else if strategy == .singleUpdate {
                result.ratioToSingleUpdate = 1
            }
            log(String(format: "  %.1f s, %.0f rows/s, batch p99 %.1f ms, live max %.1f ms", seconds, result.rowsPerSecond, result.batchP99Ms, live?.maxMs ?? 0))
            results.append(result)
        }
        return SizeRun(rows: rows, tableBytes: bytes, baseline: baseline, results: results)
    }

    func machine() throws -> [String: String] {
        let db = try admin()
        var info: [String: String] = ["cores": String(ProcessInfo.processInfo.activeProcessorCount)]
        info["memory"] = String(format: "%.1f GiB", Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824)
        if let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let model = cpu.split(separator: "\n").first(where: { $0.hasPrefix("model name") })?.split(separator: ":").last {
            info["cpu"] = model.trimmingCharacters(in: .whitespaces)
        }
        info["postgresql"] = try db.query("SELECT version() AS v").first?["v"].string ?? "?"
        for row in try db.query(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'synchronous_commit', 'fsync', 'full_page_writes', 'wal_level', 'work_mem', 'effective_io_concurrency') ORDER BY name"
        ).rows {
            info["setting." + row["name"].string!] = row["setting"].string! + (row["unit"].string.map { " (\($0))" } ?? "")
        }
        return info
    }
}
