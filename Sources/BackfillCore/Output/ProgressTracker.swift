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
    private var waiting: Set<Int> = []
    /// Health-throttle reasons that set the job's pace rather than interrupt it: their waits are
    /// active time, like the row budget's rests.
    static let paceReasons: Set<ThrottleReason> = [.walRate]

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
        switch event.body {
        case .start(let e):
            startedAt = event.time
            if let n = e.rowsEstimate { rowsEstimate = n }
            (rowsBefore, rowsDone) = (e.rowsDoneBefore, e.rowsDoneBefore)
            if let bounds = e.keyBounds { (keyMin, keyMax) = (bounds.min, bounds.max) }
            batchSize = Int64(e.batchSize)
            state = "running"
            fraction = rowsFraction
            basis = keyMax != nil ? .keyPosition : rowsEstimate != nil ? .rowEstimate : nil
            startFraction = fraction
            if let fraction { window.record(progress: fraction, at: seconds) }
        case .batch(let e):
            (rowsDone, runRows) = (e.rowsDone, e.runRows)
            committed(nextBatchSize: e.nextBatchSize, duration: e.duration, lastKey: e.lastKey, at: seconds)
        case .revertBatch(let e):
            committed(nextBatchSize: e.nextBatchSize, duration: e.duration, lastKey: nil, at: seconds)
        case .retry(let e):
            state = "retrying: \(e.reason.rawValue)"
        case .throttle(let e):
            if !Self.paceReasons.contains(e.reason) {
                switch e.state {
                case .waiting: waiting.insert(e.worker ?? 0)
                case .resumed: waiting.remove(e.worker ?? 0)
                case nil: break
                }
                window.setThrottled(!waiting.isEmpty, at: seconds)
            }
            switch (e.reason, e.state) {
            case (let reason, .waiting): state = "throttled: \(reason.rawValue)"
            case (_, .resumed): state = "running"
            case (.blocking, _): state = "throttled: blocking"
            default: break
            }
        case .pass(let e):
            if let pass = e.pass { state = "pass \(pass)" }
        case .badRow(let e):
            badRows = e.badRows
        case .stop(let e):
            state = "stopped: \(e.reason.rawValue)"
            waiting.removeAll()
            window.setThrottled(false, at: seconds)
        case .done:
            state = "done"
            fraction = 1
        case .error:
            state = "failed"
        case .finalize(let e):
            state = "finalizing \(e.step)/\(e.steps)"
        case .requirements(let e):
            if case .met = e.state { state = "running" } else { state = "waiting for requirements" }
        case .tune, .wait, .connections, .cdc, .fleet, .revert:
            break
        }
    }

    /// A committed batch: the next size, its time, and the progress from its last key (a
    /// numeric first column between the key's bounds) or from rows against the estimate.
    private mutating func committed(nextBatchSize: Int, duration: Duration, lastKey: [String]?, at seconds: Double) {
        batchSize = Int64(nextBatchSize)
        lastBatchMs = duration.milliseconds
        state = "running"
        if let first = lastKey?.first, let value = Self.numeric(first), let lo = keyMin, let hi = keyMax, hi > lo {
            fraction = min(max((value - lo) / (hi - lo), 0), 1)
            basis = .keyPosition
        } else {
            fraction = rowsFraction
            basis = fraction == nil ? nil : .rowEstimate
        }
        if startFraction == nil { startFraction = 0 }
        if let fraction { window.record(progress: fraction, at: seconds) }
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
