import PostgresClient

/// How the check that no row still matches `where` ran: counted while the last ranges were
/// walked, then their intervals (`overlapped`), or a full scan after the walk (`after_walk`).
public enum EndCheckMode: String, Sendable, Hashable {
    case overlapped
    case afterWalk = "after_walk"
}

/// What a run did, for the final summary line and the JSON `done`/`stop` events.
public struct RunSummary: Sendable, Hashable {
    public var job: String
    public var state: JobState
    /// Rows this run wrote (`run_rows`).
    public var rows: Int64 = 0
    /// Rows the job had done before this run started, according to the checkpoint store.
    public var rowsBefore: Int64 = 0
    public var batches: Int64 = 0
    public var seconds: Double = 0
    public var batchMs: [Double] = []
    public var retries: [RetryReason: Int] = [:]
    public var throttledSeconds: [String: Double] = [:]
    /// The checkpoint after the last committed batch of this run.
    public var lastKey: [String]?
    /// How the last check that no row still matches `where` ran: `overlapped` with the end of
    /// the walk (`EndCheck`) or `after_walk` (a full scan), and how long it took after the walk;
    /// nil when there was none.
    public var endCheck: EndCheckFigures?

    /// How the end check ran and how long it took after the walk.
    public struct EndCheckFigures: Sendable, Hashable {
        public var mode: EndCheckMode
        public var took: Duration

        public init(mode: EndCheckMode, took: Duration) {
            self.mode = mode
            self.took = took
        }
    }
    /// Rows this run quarantined as bad (`on_error: skip`).
    public var runBadRows: Int64 = 0
    /// The job's quarantined rows at the end of the run, this run's and earlier runs'.
    public var badRows: Int64 = 0
    /// Whether bad rows make a finished job exit 1 (`on_error.exit_zero` is false).
    public var badRowsFail = true

    public init(job: String, state: JobState) {
        self.job = job
        self.state = state
    }

    /// The job's total (`rows_done`, as in `status` and the metrics): before this run plus this run.
    public var rowsDone: Int64 { rowsBefore + rows }

    public var rowsPerSecond: Double { seconds > 0 ? Double(rows) / seconds : 0 }

    /// The q-quantile (0…1) of batch transaction times, nearest-rank.
    public func batchPercentile(_ q: Double) -> Double {
        guard !batchMs.isEmpty else { return 0 }
        let sorted = batchMs.sorted()
        let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    /// `rows=… batches=… seconds=… rows/s=… batch p50/p99/max=…/…/… ms retries=…`.
    public var line: String {
        let retryText = retries.isEmpty ? "0" : retries.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue):\($0.value)" }.joined(separator: ",")
        let throttleText = throttledSeconds.isEmpty ? "0" : throttledSeconds.sorted { $0.key < $1.key }.map { String(format: "%@:%.1fs", $0.key, $0.value) }.joined(separator: ",")
        return String(
            format: "%@: %@ rows=%lld batches=%lld seconds=%.1f rows/s=%.0f batch p50/p99/max=%.1f/%.1f/%.1f ms retries=%@ throttled=%@",
            job, state.rawValue + (badRows > 0 ? " with \(badRows) bad rows" : ""), rows, batches, seconds, rowsPerSecond, batchPercentile(0.5), batchPercentile(0.99), batchMs.max() ?? 0, retryText, throttleText)
    }
}

import Foundation
