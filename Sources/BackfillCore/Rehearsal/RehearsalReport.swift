import Foundation

/// One gate of the rehearsal: a limit, what was measured, and whether it held. A gate over a
/// window with too few samples fails: nothing was measured that could pass it.
public struct RehearsalGate: Encodable, Sendable, Hashable {
    public var name: String
    public var limitMs: Double
    public var measuredMs: Double
    /// What the job's window held: live transactions and committed batches.
    public var liveTransactions: UInt64
    public var batches: Int64
    /// Why the gate failed without a verdict on its figure; nil when there were enough samples.
    public var problem: String?
    public var passed: Bool

    public init(name: String, limitMs: Double, measuredMs: Double, liveTransactions: UInt64, batches: Int64) {
        self.name = name
        self.limitMs = limitMs
        self.measuredMs = measuredMs
        self.liveTransactions = liveTransactions
        self.batches = batches
        if liveTransactions < Rehearsal.minimumLiveTransactions || batches < 1 {
            problem = "too few samples: \(liveTransactions) live transactions and \(batches) batches during the job, "
                + "at least \(Rehearsal.minimumLiveTransactions) and 1 needed; rehearse on a larger table, with more --clients, or with a lower throttle.max_rows_per_second"
            passed = false
        } else {
            problem = nil
            passed = measuredMs <= limitMs
        }
    }

    /// `gate live p99 ≤ 50.0 ms: passed (measured 3.2 ms)`.
    public var line: String {
        String(format: "gate %@ ≤ %.1f ms: %@ (%@)", name, limitMs, passed ? "passed" : "FAILED",
               problem ?? String(format: "measured %.1f ms", measuredMs))
    }

    enum CodingKeys: String, CodingKey {
        case name, passed, problem, batches, limitMs = "limit_ms", measuredMs = "measured_ms", liveTransactions = "live_transactions"
    }
}

/// One committed batch of the rehearsed job: when it ended (seconds from the rehearsal's start),
/// its transaction's wall time, rows and keys.
public struct RehearsalBatch: Encodable, Sendable, Hashable {
    public var seconds: Double
    public var durationMs: Double
    public var rows: Int64
    public var batchSize: Int64

    enum CodingKeys: String, CodingKey { case seconds = "t_s", durationMs = "duration_ms", rows, batchSize = "batch_size" }
}

/// A retry or throttle of the rehearsed job, seconds from the rehearsal's start.
public struct RehearsalEvent: Encodable, Sendable, Hashable {
    public var seconds: Double
    /// `retry` or `throttle`.
    public var event: String
    public var reason: String
    public var detail: String

    enum CodingKeys: String, CodingKey { case seconds = "t_s", event, reason, detail }
}

/// What a rehearsal measured: live traffic before and during the job (whole windows and second
/// by second), the job's own figures and batches, an estimate for production, and the gates.
/// Times are seconds from the rehearsal's start: the baseline window starts at 0, the job's at
/// `jobStartSeconds` (its traffic series count from there).
public struct RehearsalReport: Encodable, Sendable {
    public var job: String
    /// The name the job ran under: its rehearsal checkpoint.
    public var rehearsalJob: String
    public var table: String
    public var clients: Int
    public var dryRun: Bool
    public var traffic: String
    public var baseline: TrafficFigures
    public var during: TrafficFigures
    public var jobStartSeconds: Double
    public var jobEndSeconds: Double
    public var outcome: String
    public var rows: Int64
    public var seconds: Double
    public var rowsPerSecond: Double
    public var batches: Int64
    public var batchP50Ms: Double
    public var batchP99Ms: Double
    public var batchMaxMs: Double
    public var targetMs: Int
    public var retries: [String: Int]
    public var throttledSeconds: [String: Double]
    public var batchSeries: [RehearsalBatch]
    public var events: [RehearsalEvent]
    public var productionRows: Int64?
    public var productionSecondsEstimate: Double?
    public var gates: [RehearsalGate]
    public var passed: Bool { gates.allSatisfy(\.passed) }

    enum CodingKeys: String, CodingKey {
        case job, table, clients, traffic, baseline, during, outcome, rows, seconds, batches, retries, gates, passed, events
        case rehearsalJob = "rehearsal_job", dryRun = "dry_run", jobStartSeconds = "job_start_s", jobEndSeconds = "job_end_s"
        case rowsPerSecond = "rows_per_second", batchP50Ms = "batch_p50_ms", batchP99Ms = "batch_p99_ms"
        case batchMaxMs = "batch_max_ms", targetMs = "target_ms", throttledSeconds = "throttled_seconds", batchSeries = "batch_series"
        case productionRows = "production_rows", productionSecondsEstimate = "production_seconds_estimate"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(job, forKey: .job); try c.encode(rehearsalJob, forKey: .rehearsalJob); try c.encode(table, forKey: .table)
        try c.encode(clients, forKey: .clients); try c.encode(dryRun, forKey: .dryRun); try c.encode(traffic, forKey: .traffic)
        try c.encode(baseline, forKey: .baseline); try c.encode(during, forKey: .during)
        try c.encode(jobStartSeconds, forKey: .jobStartSeconds); try c.encode(jobEndSeconds, forKey: .jobEndSeconds); try c.encode(outcome, forKey: .outcome)
        try c.encode(rows, forKey: .rows); try c.encode(seconds, forKey: .seconds); try c.encode(rowsPerSecond, forKey: .rowsPerSecond)
        try c.encode(batches, forKey: .batches); try c.encode(batchP50Ms, forKey: .batchP50Ms); try c.encode(batchP99Ms, forKey: .batchP99Ms)
        try c.encode(batchMaxMs, forKey: .batchMaxMs); try c.encode(targetMs, forKey: .targetMs)
        try c.encode(retries, forKey: .retries); try c.encode(throttledSeconds, forKey: .throttledSeconds)
        try c.encode(batchSeries, forKey: .batchSeries); try c.encode(events, forKey: .events)
        try c.encode(productionRows, forKey: .productionRows); try c.encode(productionSecondsEstimate, forKey: .productionSecondsEstimate)
        try c.encode(gates, forKey: .gates); try c.encode(passed, forKey: .passed)
    }

    /// Rows/s, retries and throttles in one line each, shared by the text and the HTML report.
    var jobLine: String {
        String(format: "backfill: %@, %lld rows in %.1f s (%.0f rows/s), %lld batches, batch p50/p99/max %.1f/%.1f/%.1f ms (target %d ms)",
               outcome, rows, seconds, rowsPerSecond, batches, batchP50Ms, batchP99Ms, batchMaxMs, targetMs)
    }

    var retriesText: String {
        retries.isEmpty ? "none" : retries.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    var throttlesText: String {
        throttledSeconds.isEmpty ? "never" : throttledSeconds.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f s", $0.key, $0.value) }.joined(separator: ", ")
    }

    /// Said when the walk wrote nothing: every key was walked and locked, no row matched `where`.
    var nothingWrittenNote: String? {
        rows == 0 && batches > 0
            ? "no row matched `where`: the rehearsal walked every key and took the batches' locks but wrote nothing; restore the staging copy to rehearse the writes"
            : nil
    }

    var productionLine: String? {
        guard let productionRows, let productionSecondsEstimate else { return nil }
        return "production estimate: \(productionRows) rows at \(String(format: "%.0f", rowsPerSecond)) rows/s ≈ \(String(format: "%.0f", productionSecondsEstimate)) s (\(ProgressTracker.clock(productionSecondsEstimate)))"
    }

    /// The report for people.
    public var text: String {
        func row(_ name: String, _ a: String, _ b: String) -> String {
            name.padding(toLength: 22, withPad: " ", startingAt: 0) + a.padding(toLength: 20, withPad: " ", startingAt: 0) + b
        }
        let ratio = baseline.tps > 0 ? String(format: " (%.2f×)", during.tps / baseline.tps) : ""
        var lines = [
            "rehearsal of \(job) on \(table): \(clients) live clients (\(traffic))\(dryRun ? ", dry run: every batch rolled back" : ""), from the first key under checkpoint \(rehearsalJob)",
            "",
            row("live traffic", String(format: "baseline %.0fs", baseline.seconds), String(format: "during the job %.1fs", during.seconds)),
            row("  transactions", String(baseline.transactions), String(during.transactions)),
            row("  TPS", String(format: "%.0f", baseline.tps), String(format: "%.0f", during.tps) + ratio),
            row("  p50 ms", String(format: "%.2f", baseline.p50Ms), String(format: "%.2f", during.p50Ms)),
            row("  p99 ms", String(format: "%.2f", baseline.p99Ms), String(format: "%.2f", during.p99Ms)),
            row("  max ms", String(format: "%.1f", baseline.maxMs), String(format: "%.1f", during.maxMs)),
            row("  lock waits", baseline.lockWaitText, during.lockWaitText),
            row("  errors", String(baseline.errors), String(during.errors)),
            "",
            jobLine,
            "retries: \(retriesText); throttled: \(throttlesText)",
        ]
        if let nothingWrittenNote { lines.append("note: " + nothingWrittenNote) }
        if let productionLine { lines.append(productionLine) }
        lines += gates.map(\.line)
        return lines.joined(separator: "\n")
    }
}

extension TrafficFigures {
    /// `57, worst 41.2 ms`: transactions that waited for a row lock and the longest wait; `-`
    /// when the traffic cannot tell (its `max ms` bounds the waits).
    var lockWaitText: String {
        guard let lockWaits, let maxLockWaitMs else { return "-" }
        return lockWaits == 0 ? "0" : String(format: "%llu, worst %.1f ms", lockWaits, maxLockWaitMs)
    }
}
