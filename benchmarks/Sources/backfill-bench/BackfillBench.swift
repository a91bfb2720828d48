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
    @Option(help: "Run each table's strategies this many times, alternating (A B C A B C …); the tables show the median and range.") var rounds = 1
    @Option(help: "Keys per statement of the hand-written loop when no Backfill defaults ran before it on that table (otherwise their median batch's).") var loopBatch = 10_000
    @Option(help: "Also run one UPDATE and Backfill's defaults, without live traffic, on a table of this many rows keyed by random uuids; 0 = skip.") var uuidRows = 0
    @Option(help: "The server's fsync, on or off: the throwaway cluster starts with it, a --database server gets it by ALTER SYSTEM (as a superuser). Default: on, or the --database server's own.") var fsync: Switch?

    func validate() throws {
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
        guard loopBatch >= 1 else { throw ValidationError("--loop-batch must be at least 1") }
    }

    func run() throws {
        // In the table's order, so that Backfill's defaults run before the loop that takes their batch size.
        let chosen = try strategies.map { list in
            try list.split(separator: ",").map { name in
                guard let s = Strategy(rawValue: String(name)) else { throw ValidationError("unknown strategy \(name)") }
                return s
            }
        }
        let selected = Strategy.allCases.filter { chosen?.contains($0) ?? true }
        var cluster: LocalPostgres?
        let conninfo: String
        if let database {
            conninfo = database
        } else {
            log("starting a throwaway PostgreSQL cluster (default durability, fsync \(fsync?.rawValue ?? "on"))…")
            cluster = try LocalPostgres.start(durable: true, settings: fsync.map { ["fsync": $0.rawValue] } ?? [:])
            conninfo = cluster!.conninfo()
        }
        defer { cluster?.stop() }
        if let fsync, database != nil {
            let db = try Connection(conninfo, applicationName: "backfill-bench")
            try db.execute("ALTER SYSTEM SET fsync = \(fsync.rawValue)")
            try db.query("SELECT pg_reload_conf()")
        }
        let bench = Bench(conninfo: conninfo, clients: liveClients, rounds: rounds, loopBatch: loopBatch)

        let main = try bench.measure(rows: rows, strategies: selected, baselineSeconds: baseline)
        let quiet = quietPass
            ? try bench.with(clients: 0).measure(rows: rows, strategies: selected.filter { $0 != .offset }, baselineSeconds: 0)
            : nil
        let contention = contentionClients > 0
            ? try bench.with(clients: contentionClients).measure(
                rows: rows, strategies: selected.filter { [.singleUpdate, .backfillDefaults].contains($0) }, baselineSeconds: min(baseline, 5))
            : nil
        // The loop needs keys it can add to; a uuid's range cannot be computed by addition.
        let uuid = uuidRows > 0
            ? try bench.with(clients: 0).measure(.uuid, rows: uuidRows, strategies: selected.filter { [.singleUpdate, .backfillDefaults, .backfillPhysical].contains($0) }, baselineSeconds: 0)
            : nil
        let rehearsal = rehearsalRows > 0 ? try bench.rehearse(rows: rehearsalRows) : nil
        var seriesRuns: [SizeRun] = []
        if let series {
            for size in series.split(separator: ",").compactMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                let chosen = selected.filter { $0 != .offset || size <= offsetLimit }
                seriesRuns.append(try bench.measure(rows: size, strategies: chosen, baselineSeconds: min(baseline, 3)))
            }
        }
        let results = outputDir + "/results"
        let memory = (try? String(contentsOfFile: results + "/memory.md", encoding: .utf8)).map(Report.memoryPeaks) ?? []
        let report = Report(
            date: RunEvent.timestamp(Date()), command: (["swift run -c release backfill-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " "),
            machine: try bench.machine(), main: main, quiet: quiet, contention: contention, contentionClients: contentionClients,
            uuid: uuid, rehearsal: rehearsal, series: seriesRuns, offsetLimit: offsetLimit, liveClients: liveClients, rounds: rounds, memory: memory,
            costBreakdown: ((try? String(contentsOfFile: results + "/cost-breakdown.md", encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("|") }.map(String.init),
            separate: [Report.Separate.read("What `journal: true` costs", file: "journal.md", in: results),
                       Report.Separate.read("A fleet of databases: concurrency 1 against 2", file: "fleet.md", in: results),
                       Report.Separate.read("walk: physical against the key walk", file: "physical-walk.md", in: results)].compactMap { $0 })
        print(report.markdown)
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

/// A server setting's value on the command line.
enum Switch: String, ExpressibleByArgument, Sendable {
    case on, off
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("bench: \(text)\n".utf8))
}

/// One strategy's figures: of one round, or of all its rounds (see `init(rounds:)`).
struct StrategyResult: Encodable, Sendable {
    var strategy: Strategy
    var title: String
    var rows: Int
    /// Rows found filled exactly right after the run (every row, or no figure is reported).
    var rowsRight: Int
    var seconds: Double
    /// The fastest and slowest round's seconds.
    var secondsMin: Double?
    var secondsMax: Double?
    var rowsPerSecond: Double
    var ratioToSingleUpdate: Double?
    var ratioToLoop: Double?
    var batches: Int
    /// The median batch's size in keys.
    var batchSizeP50: Int
    var batchP50Ms: Double
    var batchP99Ms: Double
    var batchMaxMs: Double
    var live: TrafficFigures?
    var walBytes: Int64
    var first10pctBatchP50Ms: Double
    var last10pctBatchP50Ms: Double
    /// Backfill only: seconds from the last batch to `done`, the full-scan check that no row still matches `where`.
    var verifySeconds: Double?
    /// Every round's own figures, in the order they ran (empty in a round's own).
    var rounds: [StrategyResult] = []

    enum CodingKeys: String, CodingKey {
        case strategy, title, rows, seconds, batches, live, rounds
        case rowsRight = "rows_right", secondsMin = "seconds_min", secondsMax = "seconds_max", batchSizeP50 = "batch_size_p50"
        case rowsPerSecond = "rows_per_second", ratioToSingleUpdate = "ratio_to_single_update", ratioToLoop = "ratio_to_loop"
        case batchP50Ms = "batch_p50_ms", batchP99Ms = "batch_p99_ms", batchMaxMs = "batch_max_ms", walBytes = "wal_bytes"
        case first10pctBatchP50Ms = "first_10pct_batch_p50_ms", last10pctBatchP50Ms = "last_10pct_batch_p50_ms"
        case verifySeconds = "verify_seconds"
    }
}

extension StrategyResult {
    /// The rounds of one strategy as one row: the median seconds, their range, and the median
    /// round's other figures (of an even count, the slower of the middle two).
    init(rounds: [StrategyResult]) {
        let bySeconds = rounds.sorted { $0.seconds < $1.seconds }
        let n = bySeconds.count
        self = bySeconds[n / 2]
        seconds = (bySeconds[(n - 1) / 2].seconds + bySeconds[n / 2].seconds) / 2
        rowsPerSecond = Double(rows) / seconds
        secondsMin = bySeconds.first?.seconds
        secondsMax = bySeconds.last?.seconds
        self.rounds = rounds
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank).
func percentile<T>(_ values: [T], _ q: Double) -> T? {
    guard !values.isEmpty else { return nil }
    return values[min(values.count - 1, max(0, Int((q * Double(values.count)).rounded(.up)) - 1))]
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
    /// Each strategy's runs per table, alternating with the others' (A B C A B C …).
    let rounds: Int
    /// The loop's keys per statement when the section has no Backfill defaults to take it from.
    let loopBatch: Int

    /// The same bench with `clients` live clients.
    func with(clients: Int) -> Bench { Bench(conninfo: conninfo, clients: clients, rounds: rounds, loopBatch: loopBatch) }

    func admin() throws -> Connection { try Connection(conninfo, applicationName: "backfill-bench") }

    /// A fresh, identical table: recreated, VACUUM ANALYZEd, then CHECKPOINT; the checkpoint store
    /// and the other table dropped too.
    func seed(_ table: BenchTable, rows: Int) throws -> Int64 {
        let db = try admin()
        let t = table.name, id = table.idInsert
        try db.execute(
            """
            DROP SCHEMA IF EXISTS backfill CASCADE;
            DROP TABLE IF EXISTS \(BenchTable.bigint.name), \(BenchTable.uuid.name);
            CREATE TABLE \(t) (
                \(table.idColumn),
                balance numeric(12, 2) NOT NULL,
                email text NOT NULL,
                status text NOT NULL,
                balance_cents bigint,
                updated_at timestamptz NOT NULL,
                live_touches int NOT NULL DEFAULT 0
            );
            """)
        // A synchronous commit, so that the VACUUM below can set the hint bits and the visibility
        // map (after an asynchronous commit it cannot until the WAL is flushed: every page stays
        // not all-visible, and index-only scans of the fresh table fetch the heap for every key).
        try db.execute("SET synchronous_commit = on")
        try db.query(
            """
            INSERT INTO \(t) (\(id.column)balance, email, status, updated_at)
            SELECT \(id.value)(g * 7919 % 1000000) / 100.0, 'customer.' || lpad(g::text, 8, '0') || '@mail.example.com',
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
            try db.query("UPDATE \(BenchTable.bigint.name) SET live_touches = live_touches + 1 WHERE id = $1", [.int(Int64.random(in: 1...Int64(max(rows, 1))))])
            return nil  // its worst latency is the worst wait: one row per autocommitted UPDATE
        }
    }

    /// `backfill rehearse` of Backfill's defaults with its default traffic and clients, after a
    /// 5 s baseline, on a fresh table of `rows` rows.
    func rehearse(rows: Int) throws -> RehearsalReport {
        log("\(rows) rows: rehearsal with the default traffic…")
        _ = try seed(.bigint, rows: rows)
        var options = RehearsalOptions(database: conninfo)
        options.baselineSeconds = 5
        let (report, outcome) = try Rehearsal.run(spec: try JobSpec.parse(yaml: Strategy.jobYAML(.backfillDefaults), file: "bench-rehearsal.yaml"), options: options)
        guard case .done = outcome else { throw BenchError("the rehearsal did not finish: \(outcome)") }
        return report
    }

    /// Every strategy `rounds` times on `table`, alternating, each on a freshly seeded table
    /// (live traffic on the bigint table only); one row per strategy, its rounds kept.
    func measure(_ table: BenchTable = .bigint, rows: Int, strategies: [Strategy], baselineSeconds: Double) throws -> SizeRun {
        log("\(rows) rows of \(table.name): seeding…")
        let bytes = try seed(table, rows: rows)
        let live = clients > 0 && table == .bigint
        var baseline: TrafficFigures?
        if live {
            log("\(rows) rows: baseline, \(clients) live clients for \(baselineSeconds) s…")
            let traffic = liveTraffic(rows: rows)
            Thread.sleep(forTimeInterval: baselineSeconds)
            baseline = traffic.stop()
        }
        var loopBatch = self.loopBatch
        var runs: [Strategy: [StrategyResult]] = [:]
        for round in 1...rounds {
            for (i, strategy) in strategies.enumerated() {
                if round > 1 || i > 0 || baseline != nil { _ = try seed(table, rows: rows) }
                log("\(rows) rows, round \(round)/\(rounds): \(strategy.title(loopBatch: loopBatch))…")
                let result = try run(strategy, table: table, rows: rows, loopBatch: loopBatch, live: live)
                log(String(format: "  round %d/%d %@: %.2f s, %.0f rows/s, batch p99 %.1f ms, live max %.1f ms",
                           round, rounds, strategy.rawValue, result.seconds, result.rowsPerSecond, result.batchP99Ms, result.live?.maxMs ?? 0))
                // The loop walks the key span of the first round's median Backfill batch.
                if strategy == .backfillDefaults && round == 1 { loopBatch = result.batchSizeP50 }
                runs[strategy, default: []].append(result)
            }
        }
        var results = strategies.map { StrategyResult(rounds: runs[$0]!) }
        let single = results.first { $0.strategy == .singleUpdate }?.seconds
        let loop = results.first { $0.strategy == .loop }?.seconds
        for i in results.indices {
            results[i].ratioToSingleUpdate = single.map { $0 / results[i].seconds }
            results[i].ratioToLoop = loop.map { $0 / results[i].seconds }
        }
        return SizeRun(rows: rows, tableBytes: bytes, baseline: baseline, results: results)
    }

    /// One run of `strategy`, checked: every row of the table filled exactly right.
    private func run(_ strategy: Strategy, table: BenchTable, rows: Int, loopBatch: Int, live: Bool) throws -> StrategyResult {
        let db = try admin()
        let wal0 = try db.query("SELECT pg_current_wal_lsn()::text AS l").first!["l"].string!
        let traffic = live ? liveTraffic(rows: rows) : nil
        let t0 = ContinuousClock.now
        let execution = try execute(strategy, table: table, conninfo: conninfo, rows: rows, loopBatch: loopBatch)
        let samples = execution.samples
        let d = (ContinuousClock.now - t0).components
        let seconds = Double(d.seconds) + Double(d.attoseconds) / 1e18
        let liveFigures = traffic?.stop()
        let wal = try db.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint AS b", [.text(wal0)]).first!["b"].int64!
        let check = try db.query(
            "SELECT count(*) AS n, count(*) FILTER (WHERE balance_cents IS NOT DISTINCT FROM \(Strategy.setExpression)) AS right FROM \(table.name)").first!
        let right = Int(check["right"].int64!)
        guard right == rows, check["n"].int64! == Int64(rows) else {
            throw BenchError("\(strategy.rawValue) left \(rows - right) rows of \(table.name) wrong; no figure reported")
        }
        let ms = samples.map(\.ms).sorted()
        let first = samples.filter { $0.position <= 0.1 }.map(\.ms).sorted()
        let last = samples.filter { $0.position > 0.9 }.map(\.ms).sorted()
        return StrategyResult(
            strategy: strategy, title: strategy.title(loopBatch: loopBatch), rows: rows, rowsRight: right, seconds: seconds,
            rowsPerSecond: Double(rows) / seconds, batches: samples.count,
            batchSizeP50: percentile(samples.map(\.size).sorted(), 0.5) ?? 0,
            batchP50Ms: percentile(ms, 0.5) ?? 0, batchP99Ms: percentile(ms, 0.99) ?? 0, batchMaxMs: ms.last ?? 0,
            live: liveFigures, walBytes: wal, first10pctBatchP50Ms: percentile(first, 0.5) ?? 0, last10pctBatchP50Ms: percentile(last, 0.5) ?? 0,
            verifySeconds: execution.verifySeconds)
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
