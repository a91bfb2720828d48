import Foundation

/// Follows a run's events and says how far along it is: % done, rows, rate, ETA, batch size, the
/// last batch's time, and the state (running, throttled: reason, retrying: reason). Pure: time
/// comes in with the events.
///
/// % done comes from the position of the last key between the key's smallest and largest value
/// when the first key column is numeric or a timestamp, otherwise from rows done against the
/// catalog's row estimate. The ETA divides what is left by the rate measured in this run.
public struct ProgressTracker: Sendable {
    public private(set) var job = ""
    /// The job's total: rows done before this run plus this run's (`rows_done`).
    public private(set) var rowsDone: Int64 = 0
    /// Rows this run wrote (`run_rows`), for the rate.
    public private(set) var runRows: Int64 = 0
    public private(set) var rowsBefore: Int64 = 0
    public private(set) var rowsEstimate: Int64?
    public private(set) var batchSize: Int64 = 0
    public private(set) var lastBatchMs: Double = 0
    public private(set) var state = "starting"
    public private(set) var fraction: Double?
    private var keyMin: Double?
    private var keyMax: Double?
    private var startedAt: Date?
    private var startFraction: Double?
    private var lastEventAt: Date?

    public init() {}

    /// Updates the progress from one event.
    public mutating func consume(_ event: RunEvent) {
        job = event.job
        lastEventAt = event.time
        switch event.kind {
        case .start:
            startedAt = event.time
            if case .int(let n) = event["rows_estimate"] { rowsEstimate = n }
            if case .int(let n) = event["rows_done_before"] { (rowsBefore, rowsDone) = (n, n) }
            if case .double(let v) = event["key_min"] { keyMin = v }
            if case .double(let v) = event["key_max"] { keyMax = v }
            if case .int(let n) = event["batch_size"] { batchSize = n }
            state = "running"
            fraction = rowsFraction
            startFraction = fraction
        case .batch:
            if case .int(let n) = event["rows_done"] { rowsDone = n }
            if case .int(let n) = event["run_rows"] { runRows = n }
            if case .int(let n) = event["next_batch_size"] { batchSize = n }
            if case .double(let ms) = event["duration_ms"] { lastBatchMs = ms }
            state = "running"
            if case .strings(let key) = event["last_key"], let first = key.first, let value = Self.numeric(first),
               let lo = keyMin, let hi = keyMax, hi > lo {
                fraction = min(max((value - lo) / (hi - lo), 0), 1)
            } else {
                fraction = rowsFraction
            }
            if startFraction == nil { startFraction = 0 }
        case .retry:
            if case .string(let reason) = event["reason"] { state = "retrying: \(reason)" }
        case .throttle:
            switch (event["reason"], event["state"]) {
            case (.string(let reason), .string("waiting")): state = "throttled: \(reason)"
            case (_, .string("resumed")): state = "running"
            case (.string("blocking"), _): state = "throttled: blocking"
            default: break
            }
        case .pass:
            if case .int(let pass) = event["pass"] { state = "pass \(pass)" }
        case .stop:
            if case .string(let reason) = event["reason"] { state = "stopped: \(reason)" }
        case .done:
            state = "done"
            fraction = 1
        case .error:
            state = "failed"
        }
    }

    private var rowsFraction: Double? {
        guard let estimate = rowsEstimate, estimate > 0 else { return nil }
        return min(Double(rowsDone) / Double(estimate), 0.99)
    }

    /// Rows per second in this run.
    public func rate(at now: Date) -> Double {
        guard let startedAt, now > startedAt else { return 0 }
        return Double(runRows) / now.timeIntervalSince(startedAt)
    }

    /// Seconds left at the rate this run has shown, when it can be said.
    public func eta(at now: Date) -> Double? {
        guard let fraction, let startFraction, let startedAt, fraction > startFraction, fraction < 1 else { return nil }
        let elapsed = now.timeIntervalSince(startedAt)
        return elapsed * (1 - fraction) / (fraction - startFraction)
    }

    /// The progress line: `job  42.0%  840000 / ~2000000 rows  310000 rows/s  ETA 0:04  batch 15000 keys, 49.8 ms  running`.
    public func line(at now: Date) -> String {
        let percent = fraction.map { String(format: "%5.1f%%", $0 * 100) } ?? "    ?%"
        let total = rowsEstimate.map { " / ~\($0)" } ?? ""
        let eta = eta(at: now).map { "ETA \(Self.clock($0))" } ?? "ETA ?"
        return String(format: "%@  %@  %lld%@ rows  %.0f rows/s  %@  batch %lld keys, %.1f ms  %@",
                      job, percent, rowsDone, total, rate(at: now), eta, batchSize, lastBatchMs, state)
    }

    /// `1:02:03` (h:mm:ss) from an hour up, `4:05` (m:ss) below.
    public static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }

    static func numeric(_ text: String) -> Double? {
        if let v = Double(text) { return v }
        return PostgresTimestamp.parse(text)?.timeIntervalSince1970
    }
}

import PostgresClient
