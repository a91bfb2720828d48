import Foundation
import PostgresClient

/// A job's state in the checkpoint store.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case pending, running, paused, done, failed, cancelled
    /// Every key is walked and verified; the job's `finalize` statements are running.
    case finalizing
    /// `backfill revert` is putting back what the journal recorded (or was stopped doing so).
    case reverting
    /// `backfill revert` walked the whole journal.
    case reverted
}

/// One range of a job, for `status`.
public struct RangeStatus: Sendable, Hashable, Codable {
    public var range: Int
    public var lowerKey: [String]?
    public var upperKey: [String]?
    public var lastKey: [String]?
    public var done: Bool
    public var rowsDone: Int64
    public var worker: String?

    enum CodingKeys: String, CodingKey {
        case range, done, worker
        case lowerKey = "lower_key", upperKey = "upper_key", lastKey = "last_key", rowsDone = "rows_done"
    }
}

/// A worker that reported progress in the last 30 seconds, for `status`.
public struct WorkerStatus: Sendable, Hashable, Codable {
    public var worker: String
    public var range: Int?
    public var rowsDone: Int64
    public var rowsPerSecond: Double
    public var lastSeen: Date?

    enum CodingKeys: String, CodingKey {
        case worker, range
        case rowsDone = "rows_done", rowsPerSecond = "rows_per_second", lastSeen = "last_seen"
    }
}

/// One row of `status`: a job and its progress, summed over its ranges.
public struct JobStatus: Sendable, Hashable, Codable {
    public var name: String
    public var state: JobState
    public var table: String
    public var rowsDone: Int64
    public var batches: Int64
    public var lastKey: [String]?
    public var lastError: String?
    public var runner: String?
    public var pausedBy: String?
    public var pausedAt: Date?
    public var startedAt: Date?
    public var updatedAt: Date?
    public var finishedAt: Date?
    public var rangesDone: Int
    public var ranges: Int
    /// Why the job is paused by a throttle right now (`replication_lag`, `slot_lag`, `wal_rate`, `archive_backlog`, `signal_unreadable`, `check_sql`, `autovacuum`).
    public var throttleReason: String?
    /// What the throttle saw: every reason that holds, with numbers, and for a signal that
    /// cannot be read, the privilege or setting that fixes it.
    public var throttleDetail: String?
    public var throttledSince: Date?
    /// Per-range progress (filled when one job is asked for).
    public var rangeList: [RangeStatus]?
    /// Workers seen in the last 30 s (filled when one job is asked for).
    public var workers: [WorkerStatus]?
    /// Set when the store says `running` but no runner holds the lease and no worker reported in
    /// the last 30 s (a runner killed with -9, a lost host): when it was last seen. `state` is
    /// then `pending`: run it again to resume.
    public var noRunnerSince: Date?
    /// Which pass over the key space the job is in (catch-up passes and `repeat` add passes).
    public var pass: Int = 1
    /// `key`, or `physical`: the keys are then ctids, `(page,0)`, and the ETA goes by pages.
    public var walk = "key"
    /// Seconds left, estimated from the keys its ranges have left (from the catalog's row
    /// estimate, or the keys of the last pass) at the rate of the last run's active time (time
    /// throttled left out); nil when done or not yet measurable.
    public var etaSeconds: Double?
    /// Seconds the last run spent waiting on health throttles.
    public var runThrottledSeconds: Double?
    /// Rows quarantined as bad (`on_error: skip`); `backfill bad-rows JOB` lists them.
    public var badRows: Int64 = 0
    /// Keys walked over keys walked plus keys left (by the ranges' estimates), in percent; 100
    /// when done; nil before the ranges exist.
    public var percentDone: Double?
    /// Live overrides set with `backfill tune`, with who set them and when; nil when none.
    public var tuning: Tuning?
    /// `backfill revert`: rows put back so far (nil when no revert started), and rows left
    /// because the application changed them (`backfill revert JOBFILE --conflicts` lists them).
    public var revertRestored: Int64?
    public var revertConflicts: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case name, state, table, walk, batches, runner, ranges
        case rowsDone = "rows_done", lastKey = "last_key", lastError = "last_error", pausedBy = "paused_by"
        case pausedAt = "paused_at", startedAt = "started_at", updatedAt = "updated_at", finishedAt = "finished_at"
        case rangesDone = "ranges_done", throttleReason = "throttle_reason", throttleDetail = "throttle_detail", throttledSince = "throttled_since"
        case rangeList = "range_list", workers, noRunnerSince = "no_runner_since", pass
        case etaSeconds = "eta_seconds", runThrottledSeconds = "run_throttled_seconds", badRows = "bad_rows"
        case percentDone = "percent_done", tuning
        case revertRestored = "revert_restored", revertConflicts = "revert_conflicts"
    }
}

/// Who was waiting on a batch's locks as it ended.
public struct Waiters: Sendable, Hashable {
    public var count: Int
    public var longestMs: Double

    init(_ row: PostgresRow?) {
        count = row?["waiters"].int ?? 0
        longestMs = row?["longest_wait_ms"].double ?? 0
    }

    public init(count: Int, longestMs: Double) {
        self.count = count
        self.longestMs = longestMs
    }
}

/// A range as a batch transaction claimed it, under the range's row lock.
public struct RangeClaim: Sendable, Hashable {
    public var range: Int
    /// Where the next batch starts (exclusive): the range's checkpoint, else its lower bound;
    /// nil at the start of the table.
    public var lower: [String]?
    /// Where the range ends (inclusive); nil for the open-ended last range.
    public var ceiling: [String]?
    public var jobState: JobState
    /// A physical walk's heap: the partition whose pages the range holds (nil: the job's table).
    public var relation: String? = nil
    /// The job's live overrides (`backfill tune`), read by the same statement.
    public var tuning: Tuning? = nil
    /// The server's WAL insert position as the batch transaction began (bytes), read by the same
    /// statement: the start of the batch's `wal_bytes`.
    public var walPosition: Int64? = nil
    /// The server backend running the batch transaction (`pg_backend_pid()`), read by the same
    /// statement: through a pooler it is not the pid libpq was told.
    public var backendPID: Int32? = nil
}

/// The ETA `status` shows: keys left over keys walked per second of the run's active time.
public struct RunEstimate: Sendable, Hashable {
    /// Seconds since the run started (to now while it runs, to its last write after).
    public var runSeconds: Double
    /// Of those, seconds spent waiting on health throttles.
    public var throttledSeconds: Double
    /// Keys the run walked.
    public var runKeys: Int64
    /// Keys left in the ranges not yet walked, by their estimates.
    public var keysLeft: Int64

    public init(runSeconds: Double, throttledSeconds: Double, runKeys: Int64, keysLeft: Int64) {
        self.runSeconds = runSeconds
        self.throttledSeconds = throttledSeconds
        self.runKeys = runKeys
        self.keysLeft = keysLeft
    }

    /// Seconds of active time.
    public var activeSeconds: Double { max(runSeconds - throttledSeconds, 0) }

    /// Seconds left; nil before a second of active time with progress.
    public var etaSeconds: Double? {
        guard activeSeconds >= 1, runKeys > 0 else { return nil }
        return Double(max(keysLeft, 0)) / (Double(runKeys) / activeSeconds)
    }
}
