import Foundation

/// Follows a run's events and says how far along it is: % done, rows, rate, ETA, batch size, the
/// last batch's time, and the state (running, throttled: reason, retrying: reason). Pure: time
/// comes in with the events.
///
/// % done comes from the position of the last key between the key's smallest and largest value
/// when the first key column is numeric or a timestamp, otherwise (uuid, text) from rows done
/// against the catalog's row estimate; `basis` says which. It never goes above 100 %. The ETA
/// divides what is left by the rate over the last minute of active time (`EtaWindow`): time
/// waiting on a health throttle is counted apart (`throttledSeconds`) and does not slow it.
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
    /// The job's quarantined rows so far (`on_error: skip`).
    public private(set) var badRows: Int64 = 0
    public private(set) var fraction: Double?
    private var keyMin: Double?
    private var keyMax: Double?
    private var startedAt: Date?
    private var startFraction: Double?
    private var lastEventAt: Date?
    private var window = EtaWindow()
    /// Workers waiting on a health throttle now.
    private var waiting: Set<Int64> = []
    /// Health-throttle reasons that set the job's pace rather than interrupt it: their waits are
    /// active time, like the row budget's rests.
    static let paceReasons: Set<String> = ["wal_rate"]

    /// What % done and the ETA are measured by.
    public enum Basis: String, Sendable {
        /// The last key's place between the smallest and largest key.
        case keyPosition = "key position"
        /// Rows done against the catalog's estimate of the table's rows (`reltuples`), which may
        /// be off: the ETA is as good as the estimate.
        case rowEstimate = "rows vs the catalog's row estimate"
    }
    public private(set) var basis: Basis?
    /// Seconds of this run spent waiting on health throttles.
    public var throttledSeconds: Double { window.throttledSeconds }
    /// Seconds of this run not spent waiting on health throttles.
    public var activeSeconds: Double { window.activeSeconds }

    public init() {}

    /// Updates the progress from one event.
    public mutating func consume(_ event: RunEvent) {
        job = event.job
        lastEventAt = event.time
        let seconds = event.time.timeIntervalSinceReferenceDate
        window.advance(to: seconds)
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
            basis = keyMax != nil ? .keyPosition : rowsEstimate != nil ? .rowEstimate : nil
            startFraction = fraction
            if let fraction { window.record(progress: fraction, at: seconds) }
        case .batch:
            if case .int(let n) = event["rows_done"] { rowsDone = n }
            if case .int(let n) = event["run_rows"] { runRows = n }
            if case .int(let n) = event["next_batch_size"] { batchSize = n }
            if case .double(let ms) = event["duration_ms"] { lastBatchMs = ms }
            state = "running"
            if case .strings(let key) = event["last_key"], let first = key.first, let value = Self.numeric(first),
               let lo = keyMin, let hi = keyMax, hi > lo {
                fraction = min(max((value - lo) / (hi - lo), 0), 1)
                basis = .keyPosition
            } else {
                fraction = rowsFraction
                basis = fraction == nil ? nil : .rowEstimate
            }
            if startFraction == nil { startFraction = 0 }
            if let fraction { window.record(progress: fraction, at: seconds) }
        case .retry:
            if case .string(let reason) = event["reason"] { state = "retrying: \(reason)" }
        case .throttle:
            let worker: Int64 = if case .int(let w) = event["worker"] { w } else { 0 }
            if case .string(let reason) = event["reason"], !Self.paceReasons.contains(reason) {
                switch event["state"] {
                case .string("waiting"): waiting.insert(worker)
                case .string("resumed"): waiting.remove(worker)
                default: break
                }
                window.setThrottled(!waiting.isEmpty, at: seconds)
            }
            switch (event["reason"], event["state"]) {
            case (.string(let reason), .string("waiting")): state = "throttled: \(reason)"
            case (_, .string("resumed")): state = "running"
            case (.string("blocking"), _): state = "throttled: blocking"
            default: break
            }
        case .pass:
            if case .int(let pass) = event["pass"] { state = "pass \(pass)" }
        case .badRow:
            if case .int(let n) = event["bad_rows"] { badRows = n }
        case .stop:
            if case .string(let reason) = event["reason"] { state = "stopped: \(reason)" }
            waiting.removeAll()
            window.setThrottled(false, at: seconds)
        case .done:
            state = "done"
            fraction = 1
        case .error:
            state = "failed"
        case .finalize:
            if case .int(let step) = event["step"], case .int(let steps) = event["steps"] { state = "finalizing \(step)/\(steps)" }
        case .requirements:
            if case .string(let s) = event["state"] { state = s == "met" ? "running" : "waiting for requirements" }
        case .tune, .wait, .connections, .cdc, .fleet, .revert:
            break
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

    /// Seconds left at the rate of the last minute of active time, when it can be said. It does
    /// not grow while a health throttle holds the job: that time is not counted as work.
    public func eta(at now: Date) -> Double? {
        guard let fraction, fraction < 1 else { return nil }
        return window.eta(progress: fraction, total: 1)
    }

    /// The progress line: `job  42.0%  840000 / ~2000000 rows  310000 rows/s  ETA 0:04  batch 15000 keys, 49.8 ms  running`;
    /// an ETA from the row estimate says so (`ETA ~0:04 by row estimate`), and throttled time
    /// shows apart (`throttled 0:05`).
    public func line(at now: Date) -> String {
        let percent = fraction.map { String(format: "%5.1f%%", $0 * 100) } ?? "    ?%"
        let total = rowsEstimate.map { " / ~\($0)" } ?? ""
        var eta = eta(at: now).map { basis == .rowEstimate ? "ETA ~\(Self.clock($0)) by row estimate" : "ETA \(Self.clock($0))" } ?? "ETA ?"
        if window.throttledSeconds >= 1 { eta += " (throttled \(Self.clock(window.throttledSeconds)))" }
        return String(format: "%@  %@  %lld%@ rows  %.0f rows/s  %@  batch %lld keys, %.1f ms  %@",
                      job, percent, rowsDone, total, rate(at: now), eta, batchSize, lastBatchMs, state + (badRows > 0 ? ", \(badRows) bad rows" : ""))
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
