import CoreMetrics
import Foundation

/// Turns run events into swift-metrics, each series labelled `backfill_job` with the job's name
/// (not `job`: Prometheus owns that label, the scrape job's, and renames a scraped one to
/// `exported_job`), and in a fleet run also `backfill_target` with the target's name: rows (`backfill_rows_total` counts this process's,
/// `backfill_rows_done` is the job's total, as `rows_done` in events and `status`) and batches,
/// batch duration, size and target, retries and
/// throttled seconds by reason, progress, state and the time of the last committed batch, and what
/// the batches cost: WAL bytes written while they ran and the share of the table's updates that
/// were HOT; the rows quarantined as bad (`on_error: skip`); and the job's `cdc` marks.
/// Whatever `MetricsSystem` backend the process bootstrapped receives them (Prometheus in the CLI).
public final class RunMetrics {
    private let job: String
    /// `backfill_job`, and `backfill_target` for a target of a fleet run.
    private let dims: [(String, String)]
    private let rows: Counter
    private let rowsDone: Gauge
    private let batches: Counter
    private let batchDuration: CoreMetrics.Timer
    private let batchSize: Gauge
    private let batchTarget: Gauge
    private let progress: Gauge
    private let lastSuccess: Gauge
    private let walBytes: Counter
    private let hotRatio: Gauge
    private let badRows: Counter
    private var retries: [String: Counter] = [:]
    private var throttled: [String: FloatingPointCounter] = [:]
    private var states: [String: Gauge] = [:]
    private var tracker = ProgressTracker()
    private let factory: any MetricsFactory

    /// The states the `backfill_state` gauge reports, one series each (1 for the current one).
    public static let stateNames = ["running", "throttled", "retrying", "stopped", "done", "failed", "finalizing"]

    /// The label carrying the job's name on every series.
    public static let jobLabel = "backfill_job"
    /// The label carrying a fleet run's target (`run --targets`) on every series of that target.
    public static let targetLabel = "backfill_target"

    /// Each series' `# HELP` text, by name: the exporter writes it above the series.
    public static let help: [String: String] = [
        "backfill_rows_total": "Rows this process wrote.",
        "backfill_rows_done": "Rows the job has written in all, over every run and process (rows_done of status).",
        "backfill_batches_total": "Batches this process committed.",
        "backfill_batch_duration_seconds": "Wall time of each committed batch transaction.",
        "backfill_batch_size": "Keys in the next batch, as the sizer chose it.",
        "backfill_batch_target_seconds": "The job's batch.target_ms, the duration the sizer aims each batch at.",
        "backfill_progress_ratio": "Share of the job done, 0 to 1.",
        "backfill_last_success_timestamp_seconds": "Unix time of the last committed batch.",
        "backfill_wal_bytes_total": "WAL bytes written while this process's batches ran.",
        "backfill_hot_update_ratio": "Share of the table's updates during the run that were HOT, 0 to 1.",
        "backfill_bad_rows_total": "Rows this process quarantined as bad (on_error: skip).",
        "backfill_retries_total": "Batches retried, by reason.",
        "backfill_throttled_seconds_total": "Seconds spent throttled, by reason.",
        "backfill_state": "1 for the job's current state in this process, 0 for the others.",
        "backfill_cdc_origin": "1 while the job's batches carry this replication origin (cdc.origin).",
        "backfill_cdc_messages": "1 while each batch emits a logical decoding message (cdc.messages).",
    ]

    /// - Parameter factory: the backend; the one `MetricsSystem` bootstrapped unless a test gives one.
    public init(job: String, target: String? = nil, factory: any MetricsFactory = MetricsSystem.factory) {
        self.job = job
        self.factory = factory
        let dims = [(Self.jobLabel, job)] + (target.map { [(Self.targetLabel, $0)] } ?? [])
        self.dims = dims
        rows = Counter(label: "backfill_rows_total", dimensions: dims, factory: factory)
        rowsDone = Gauge(label: "backfill_rows_done", dimensions: dims, factory: factory)
        batches = Counter(label: "backfill_batches_total", dimensions: dims, factory: factory)
        batchDuration = CoreMetrics.Timer(label: "backfill_batch_duration_seconds", dimensions: dims, factory: factory)
        batchSize = Gauge(label: "backfill_batch_size", dimensions: dims, factory: factory)
        batchTarget = Gauge(label: "backfill_batch_target_seconds", dimensions: dims, factory: factory)
        progress = Gauge(label: "backfill_progress_ratio", dimensions: dims, factory: factory)
        lastSuccess = Gauge(label: "backfill_last_success_timestamp_seconds", dimensions: dims, factory: factory)
        walBytes = Counter(label: "backfill_wal_bytes_total", dimensions: dims, factory: factory)
        hotRatio = Gauge(label: "backfill_hot_update_ratio", dimensions: dims, factory: factory)
        badRows = Counter(label: "backfill_bad_rows_total", dimensions: dims, factory: factory)
        for state in Self.stateNames {
            states[state] = Gauge(label: "backfill_state", dimensions: dims + [("state", state)], factory: factory)
        }
        setState("running")
    }

    private func setState(_ current: String) {
        for (name, gauge) in states { gauge.record(name == current ? 1 : 0) }
    }

    public func record(_ event: RunEvent) {
        tracker.consume(event)
        switch event.body {
        case .start(let e):
            rowsDone.record(Double(tracker.rowsDone))
            batchTarget.record(e.target.milliseconds / 1000)
            setState("running")
            // Created at the start of a job with `cdc`, so that a job without one exports neither.
            if let origin = e.cdcOrigin {
                Gauge(label: "backfill_cdc_origin", dimensions: dims + [("origin", origin)], factory: factory).record(1)
            }
            if e.cdcMessages { Gauge(label: "backfill_cdc_messages", dimensions: dims, factory: factory).record(1) }
        case .batch(let e):
            committed(rows: e.rows, duration: e.duration, nextBatchSize: e.nextBatchSize, at: event.time)
            if let n = e.walBytes { walBytes.increment(by: Int(n)) }
            if let r = e.hotUpdateRatio { hotRatio.record(r) }
        case .revertBatch(let e):
            committed(rows: e.rows, duration: e.duration, nextBatchSize: e.nextBatchSize, at: event.time)
        case .retry(let e):
            let reason = e.reason.rawValue
            let counter = retries[reason] ?? Counter(label: "backfill_retries_total", dimensions: dims + [("reason", reason)], factory: factory)
            retries[reason] = counter
            counter.increment()
            setState("retrying")
        case .throttle(let e):
            if let wait = e.wait, wait > .zero {
                let reason = e.reason.rawValue
                let counter = throttled[reason] ?? FloatingPointCounter(label: "backfill_throttled_seconds_total", dimensions: dims + [("reason", reason)], factory: factory)
                throttled[reason] = counter
                counter.increment(by: wait.milliseconds / 1000)
            }
            setState(e.state == .resumed ? "running" : "throttled")
        case .pass: setState("running")
        case .badRow: badRows.increment()
        case .stop: setState("stopped")
        case .done: setState("done")
        case .error: setState("failed")
        case .finalize: setState("finalizing")
        case .requirements, .tune, .wait, .connections, .cdc, .fleet, .revert: break
        }
        if let f = tracker.fraction { progress.record(f) }
    }

    /// A committed batch (of a run or of `backfill revert`).
    private func committed(rows: Int64, duration: Duration, nextBatchSize: Int, at time: Date) {
        self.rows.increment(by: Int(rows))
        rowsDone.record(Double(tracker.rowsDone))
        batches.increment()
        batchDuration.recordNanoseconds(Int64(duration.milliseconds * 1_000_000))
        batchSize.record(Double(nextBatchSize))
        lastSuccess.record(time.timeIntervalSince1970)
        setState("running")
    }
}
