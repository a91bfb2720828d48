/// Why a job slows down or waits: the `reason` of `throttle` events, the `reason` label of
/// `backfill_throttled_seconds_total` and the summary's `throttled_seconds_<reason>`. The health
/// reasons (`HealthGate.Reason`) are checked between batches; `blocking` and
/// `max_rows_per_second` come from the batches themselves.
public enum ThrottleReason: String, Sendable, Hashable, CaseIterable {
    /// Live sessions waited on a batch's locks (`throttle.when_blocking`).
    case blocking
    /// The row budget (`throttle.max_rows_per_second`).
    case maxRowsPerSecond = "max_rows_per_second"
    case replicationLag = "replication_lag"
    case checkSQL = "check_sql"
    case autovacuum
    case slotLag = "slot_lag"
    /// The job's WAL budget (`throttle.max_wal_mb_per_second`).
    case walRate = "wal_rate"
    case archiveBacklog = "archive_backlog"
    /// A configured signal that cannot be read.
    case unreadable = "signal_unreadable"
}
