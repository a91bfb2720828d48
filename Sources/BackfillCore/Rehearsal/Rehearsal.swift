import Foundation
import PostgresClient

/// Options of `backfill rehearse`.
public struct RehearsalOptions: Sendable {
    public var database: String?
    public var clients = 4
    public var baselineSeconds = 15.0
    /// The operator's own traffic: statements separated by `;`, with `:key` standing for a
    /// random existing value of the first key column. Nil: lock random rows as a writer would.
    public var trafficSQL: String?
    /// The production table's row count, for the run-time estimate (default: this table's).
    public var rowsEstimate: Int64?
    public var maxLiveP99Ms: Double?
    public var maxLockWaitMs: Double?
    /// Roll back every batch: locks are real, writes are not kept.
    public var dryRun = false
    public var store = CheckpointStore()

    public init(database: String?) { self.database = database }
}

/// One gate of the rehearsal: a limit, what was measured, and whether it held.
public struct RehearsalGate: Encodable, Sendable, Hashable {
    public var name: String
    public var limitMs: Double
    public var measuredMs: Double
    public var passed: Bool

    enum CodingKeys: String, CodingKey { case name, passed, limitMs = "limit_ms", measuredMs = "measured_ms" }
}

/// What a rehearsal measured: live traffic before and during the job, the job's own figures, an
/// estimate for production, and the gates.
public struct RehearsalReport: Encodable, Sendable {
    public var job: String
    public var table: String
    public var clients: Int
    public var dryRun: Bool
    public var traffic: String
    public var baseline: TrafficFigures
    public var during: TrafficFigures
    public var outcome: String
    public var rows: Int64
    public var seconds: Double
    public var rowsPerSecond: Double
    public var batches: Int64
    public var batchP50Ms: Double
    public var batchP99Ms: Double
    public var batchMaxMs: Double
    public var retries: [String: Int]
    public var throttledSeconds: [String: Double]
    public var productionRows: Int64?
    public var productionSecondsEstimate: Double?
    public var gates: [RehearsalGate]
    public var passed: Bool { gates.allSatisfy(\.passed) }

    enum CodingKeys: String, CodingKey {
        case job, table, clients, traffic, baseline, during, outcome, rows, seconds, batches, retries, gates, passed
        case dryRun = "dry_run", rowsPerSecond = "rows_per_second", batchP50Ms = "batch_p50_ms", batchP99Ms = "batch_p99_ms"
        case batchMaxMs = "batch_max_ms", throttledSeconds = "throttled_seconds", productionRows = "production_rows"
        case productionSecondsEstimate = "production_seconds_estimate"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(job, forKey: .job); try c.encode(table, forKey: .table); try c.encode(clients, forKey: .clients)
        try c.encode(dryRun, forKey: .dryRun); try c.encode(traffic, forKey: .traffic)
        try c.encode(baseline, forKey: .baseline); try c.encode(during, forKey: .during); try c.encode(outcome, forKey: .outcome)
        try c.encode(rows, forKey: .rows); try c.encode(seconds, forKey: .seconds); try c.encode(rowsPerSecond, forKey: .rowsPerSecond)
        try c.encode(batches, forKey: .batches); try c.encode(batchP50Ms, forKey: .batchP50Ms); try c.encode(batchP99Ms, forKey: .batchP99Ms)
        try c.encode(batchMaxMs, forKey: .batchMaxMs); try c.encode(retries, forKey: .retries); try c.encode(throttledSeconds, forKey: .throttledSeconds)
        try c.encode(productionRows, forKey: .productionRows); try c.encode(productionSecondsEstimate, forKey: .productionSecondsEstimate)
        try c.encode(gates, forKey: .gates); try c.encode(passed, forKey: .passed)
    }

    /// The report for people.
    public var text: String {
        func row(_ name: String, _ a: String, _ b: String) -> String {
            name.padding(toLength: 22, withPad: " ", startingAt: 0) + a.padding(toLength: 14, withPad: " ", startingAt: 0) + b
        }
        let ratio = baseline.tps > 0 ? String(format: " (%.2f×)", during.tps / baseline.tps) : ""
        var lines = [
            "rehearsal of \(job) on \(table): \(clients) live clients (\(traffic))\(dryRun ? ", dry run: every batch rolled back" : "")",
            "",
            row("live traffic", "baseline", "during the job"),
            row("  TPS", String(format: "%.0f", baseline.tps), String(format: "%.0f", during.tps) + ratio),
            row("  p50 ms", String(format: "%.2f", baseline.p50Ms), String(format: "%.2f", during.p50Ms)),
            row("  p99 ms", String(format: "%.2f", baseline.p99Ms), String(format: "%.2f", during.p99Ms)),
            row("  max ms (lock wait)", String(format: "%.1f", baseline.maxMs), String(format: "%.1f", during.maxMs)),
            row("  errors", String(baseline.errors), String(during.errors)),
            "",
            String(format: "backfill: %@, %lld rows in %.1f s (%.0f rows/s), %lld batches, batch p50/p99/max %.1f/%.1f/%.1f ms",
                   outcome, rows, seconds, rowsPerSecond, batches, batchP50Ms, batchP99Ms, batchMaxMs),
            "retries: " + (retries.isEmpty ? "none" : retries.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                + "; throttled: " + (throttledSeconds.isEmpty ? "never" : throttledSeconds.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f s", $0.key, $0.value) }.joined(separator: ", ")),
        ]
        if let productionRows, let productionSecondsEstimate {
            lines.append("production estimate: \(productionRows) rows at \(String(format: "%.0f", rowsPerSecond)) rows/s ≈ \(String(format: "%.0f", productionSecondsEstimate)) s (\(ProgressTracker.clock(productionSecondsEstimate)))")
        }
        for gate in gates {
            lines.append(String(format: "gate %@ ≤ %.1f ms: %@ (measured %.1f ms)", gate.name, gate.limitMs, gate.passed ? "passed" : "FAILED", gate.measuredMs))
        }
        return lines.joined(separator: "\n")
    }
}

/// `backfill rehearse`: a baseline window of synthetic live traffic, then the job while the
/// traffic goes on, and a report of what the traffic felt.
public enum Rehearsal {
    public static func run(
        spec: JobSpec, options: RehearsalOptions, stop: StopSignal = StopSignal(), emit: @escaping (RunEvent) -> Void = { _ in }
    ) throws -> (RehearsalReport, RunOutcome) {
        let db = try Connection(options.database, applicationName: "backfill:\(spec.name):rehearse")
        let plan = try Planner.plan(spec, on: db)
        let transaction = try makeTraffic(plan: plan, options: options, db: db)
        let description = options.trafficSQL == nil ? "SELECT … FOR NO KEY UPDATE of random rows, rolled back" : "the operator's --traffic-sql"

        let baselineTraffic = SyntheticTraffic(clients: options.clients, conninfo: options.database, applicationName: "backfill:rehearse:traffic", transaction: transaction)
        var waited = 0.0
        while waited < options.baselineSeconds && !stop.isRequested {
            usleep(50_000)
            waited += 0.05
        }
        let baseline = baselineTraffic.stop()

        let duringTraffic = SyntheticTraffic(clients: options.clients, conninfo: options.database, applicationName: "backfill:rehearse:traffic", transaction: transaction)
        var runOptions = RunOptions(database: options.database)
        runOptions.dryRun = options.dryRun
        runOptions.store = options.store
        let outcome = Runner(spec: spec, options: runOptions, stop: stop, emit: emit).run()
        let during = duringTraffic.stop()

        let summary: RunSummary
        switch outcome {
        case .done(let s), .stopped(_, let s), .failed(_, let s): summary = s
        case .held, .invalid: summary = RunSummary(job: spec.name, state: .failed)
        }
        let tableRows = try db.query("SELECT count(*) AS n FROM \(plan.statements.table)").first?["n"].int64
        let productionRows = options.rowsEstimate ?? tableRows
        var gates: [RehearsalGate] = []
        if let limit = options.maxLiveP99Ms {
            gates.append(RehearsalGate(name: "live p99", limitMs: limit, measuredMs: during.p99Ms, passed: during.p99Ms <= limit))
        }
        if let limit = options.maxLockWaitMs {
            gates.append(RehearsalGate(name: "lock wait", limitMs: limit, measuredMs: during.maxMs, passed: during.maxMs <= limit))
        }
        let report = RehearsalReport(
            job: spec.name, table: plan.statements.table, clients: options.clients, dryRun: options.dryRun, traffic: description,
            baseline: baseline, during: during, outcome: summary.state.rawValue, rows: summary.rows, seconds: summary.seconds,
            rowsPerSecond: summary.rowsPerSecond, batches: summary.batches, batchP50Ms: summary.batchPercentile(0.5),
            batchP99Ms: summary.batchPercentile(0.99), batchMaxMs: summary.batchMs.max() ?? 0,
            retries: Dictionary(uniqueKeysWithValues: summary.retries.map { ($0.key.rawValue, $0.value) }),
            throttledSeconds: summary.throttledSeconds, productionRows: productionRows,
            productionSecondsEstimate: productionRows.flatMap { rows in summary.rowsPerSecond > 0 ? Double(rows) / summary.rowsPerSecond : nil },
            gates: gates)
        return (report, outcome)
    }

    /// The live transaction each client repeats.
    static func makeTraffic(plan: JobPlan, options: RehearsalOptions, db: Connection) throws -> @Sendable (Connection) throws -> Void {
        let keys = try plan.sampleKeys(on: db)
        guard !keys.isEmpty else { return { _ in usleep(10_000) } }
        if let sql = options.trafficSQL {
            let statements = sql.split(separator: ";").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
                .map { $0.replacingOccurrences(of: ":key", with: "$1") }
            return { db in
                let key = keys.randomElement()!
                for statement in statements {
                    if statement.contains("$1") { try db.query(statement, [.text(key[0])]) } else { try db.execute(statement) }
                }
            }
        }
        let columns = plan.statements.key.map { Identifier.quote($0.name) }
        let match = plan.statements.key.enumerated().map { i, k in "\(Identifier.quote(k.name)) = $\(i + 1)::\(k.type)" }.joined(separator: " AND ")
        let lock = "SELECT \(columns.joined(separator: ", ")) FROM \(plan.statements.table) WHERE \(match) FOR NO KEY UPDATE"
        return { db in
            let key = keys.randomElement()!
            try db.execute("BEGIN")
            do {
                try db.query(lock, key.map(PostgresValue.text))
                try db.execute("ROLLBACK")
            } catch {
                if db.isOpen { try? db.execute("ROLLBACK") }
                throw error
            }
        }
    }
}
