import Foundation
import PostgresClient

// The payload of each event of the walk, as typed values (the run's ends, `requires`, finalize,
// wait, fleet and revert are in `RunEvent+OutcomeBodies.swift`). What each field means, and
// its JSON name, is in docs/events.md; `RunEvent+Fields.swift` encodes them.

extension RunEvent {
    /// `start`: the job passed its checks and holds the lease.
    public struct Start: Sendable, Hashable {
        public var table: String
        public var action: String
        /// The catalog's `reltuples`, nil when unknown.
        public var rowsEstimate: Int64?
        public var rowsDoneBefore: Int64
        public var batchSize: Int
        public var target: Duration
        public var keyIndex: String
        /// host:pid.
        public var runner: String
        public var runID: String
        public var cdcOrigin: String?
        public var cdcMessages: Bool
        /// The first key column's smallest and largest value, when it is numeric or a timestamp
        /// (epoch seconds).
        public var keyBounds: KeyBounds?
        public var mode: Mode

        public struct KeyBounds: Sendable, Hashable {
            public var min: Double
            public var max: Double
            public init(min: Double, max: Double) { (self.min, self.max) = (min, max) }
        }

        /// A rehearsal dry run, or a run with its workers and ranges.
        public enum Mode: Sendable, Hashable {
            case dryRun
            case run(workers: Int, ranges: Int)
        }

        public init(table: String, action: String, rowsEstimate: Int64?, rowsDoneBefore: Int64, batchSize: Int, target: Duration, keyIndex: String,
                    runner: String, runID: String, cdcOrigin: String? = nil, cdcMessages: Bool = false, keyBounds: KeyBounds? = nil, mode: Mode) {
            self.table = table
            self.action = action
            self.rowsEstimate = rowsEstimate
            self.rowsDoneBefore = rowsDoneBefore
            self.batchSize = batchSize
            self.target = target
            self.keyIndex = keyIndex
            self.runner = runner
            self.runID = runID
            self.cdcOrigin = cdcOrigin
            self.cdcMessages = cdcMessages
            self.keyBounds = keyBounds
            self.mode = mode
        }
    }

    /// `batch`: a batch of a run committed.
    public struct Batch: Sendable, Hashable {
        /// How the upper key was found: by arithmetic on a dense integer key (`span`), counted
        /// through the key's index, or a physical walk's page range (`pages`).
        public enum Bound: String, Sendable, Hashable {
            case span, counted, pages
        }

        public var rows: Int64
        public var batchSize: Int
        public var keys: Int
        public var duration: Duration
        public var attempt: Int
        public var lastKey: [String]
        public var range: Int
        public var rowsDone: Int64
        public var runRows: Int64
        public var nextBatchSize: Int
        public var bound: Bound
        public var walBytes: Int64?
        public var hotUpdateRatio: Double?
        public var worker: Int

        public init(rows: Int64, batchSize: Int, keys: Int, duration: Duration, attempt: Int, lastKey: [String], range: Int, rowsDone: Int64, runRows: Int64,
                    nextBatchSize: Int, bound: Bound, walBytes: Int64? = nil, hotUpdateRatio: Double? = nil, worker: Int) {
            self.rows = rows
            self.batchSize = batchSize
            self.keys = keys
            self.duration = duration
            self.attempt = attempt
            self.lastKey = lastKey
            self.range = range
            self.rowsDone = rowsDone
            self.runRows = runRows
            self.nextBatchSize = nextBatchSize
            self.bound = bound
            self.walBytes = walBytes
            self.hotUpdateRatio = hotUpdateRatio
            self.worker = worker
        }
    }

    /// A `batch` of `backfill revert`: journal rows walked, rows restored, rows left.
    public struct RevertBatch: Sendable, Hashable {
        public var dryRun: Bool
        public var rows: Int64
        public var restored: Int64
        public var conflicts: Int64
        public var batchSize: Int
        public var duration: Duration
        /// The batch's lowest journal `seq`.
        public var lastSeq: Int64
        public var nextBatchSize: Int

        public init(dryRun: Bool, rows: Int64, restored: Int64, conflicts: Int64, batchSize: Int, duration: Duration, lastSeq: Int64, nextBatchSize: Int) {
            self.dryRun = dryRun
            self.rows = rows
            self.restored = restored
            self.conflicts = conflicts
            self.batchSize = batchSize
            self.duration = duration
            self.lastSeq = lastSeq
            self.nextBatchSize = nextBatchSize
        }
    }

    /// `retry`: a batch, a finalize step or a revert batch failed with a retryable error.
    public struct Retry: Sendable, Hashable {
        /// What is tried again.
        public enum Source: Sendable, Hashable {
            /// A worker's batch, tried again with `nextBatchSize` keys.
            case worker(Int, nextBatchSize: Int)
            case finalize(step: Int)
            case revert
        }

        public var reason: RetryReason
        public var attempt: Int
        public var delay: Duration
        /// How long the failed try took, its SQLSTATE and message, when known.
        public var failedAfter: Duration?
        public var sqlstate: String?
        public var message: String?
        public var source: Source

        public init(reason: RetryReason, attempt: Int, delay: Duration, failedAfter: Duration? = nil, sqlstate: String? = nil, message: String? = nil, source: Source) {
            self.reason = reason
            self.attempt = attempt
            self.delay = delay
            self.failedAfter = failedAfter
            self.sqlstate = sqlstate
            self.message = message
            self.source = source
        }
    }

    /// `throttle`: the job slows down or waits.
    public struct Throttle: Sendable, Hashable {
        public enum Cause: Sendable, Hashable {
            /// Live sessions waited on the last batch's locks: the worker rests, the next batch is smaller.
            case blocking(waiters: Int, longestWait: Duration, rest: Duration, nextBatchSize: Int)
            /// The watchdog cancelled a batch a live session waited on too long.
            case watchdog(longestWait: Duration, rest: Duration, nextBatchSize: Int)
            /// The row budget (`max_rows_per_second`) makes the worker wait.
            case rowBudget(wait: Duration)
            /// A health reason holds: the worker waits; `detail` lists every reason that holds.
            case waiting(ThrottleReason, detail: String)
            /// The health throttle let go after `waited`.
            case resumed(ThrottleReason, waited: Duration)
            /// `backfill revert` waits on a health reason.
            case revert(ThrottleReason, detail: String)
        }

        /// A health throttle's `state`.
        public enum State: String, Sendable, Hashable {
            case waiting, resumed
        }

        public var cause: Cause
        /// The worker; nil for `backfill revert`'s.
        public var worker: Int?

        public init(cause: Cause, worker: Int?) {
            self.cause = cause
            self.worker = worker
        }

        public var reason: ThrottleReason {
            switch cause {
            case .blocking, .watchdog: .blocking
            case .rowBudget: .maxRowsPerSecond
            case .waiting(let reason, _), .resumed(let reason, _), .revert(let reason, _): reason
            }
        }

        public var state: State? {
            switch cause {
            case .waiting: .waiting
            case .resumed: .resumed
            default: nil
            }
        }

        /// The time throttled that the event accounts for (`wait_ms`), when it has one.
        public var wait: Duration? {
            switch cause {
            case .blocking(_, _, let rest, _), .watchdog(_, let rest, _): rest
            case .rowBudget(let wait): wait
            case .resumed(_, let waited): waited
            case .waiting, .revert: nil
            }
        }
    }

    /// `pass`: every key is walked but rows still match `where`.
    public struct Pass: Sendable, Hashable {
        /// The catch-up pass that starts; nil for a `repeat` job, which leaves the rows to its next run.
        public var pass: Int?
        /// Rows still matching, counted up to 1,000.
        public var remaining: Int64
        public var reason: String
        public var endCheck: EndCheckMode

        public init(pass: Int?, remaining: Int64, reason: String, endCheck: EndCheckMode) {
            self.pass = pass
            self.remaining = remaining
            self.reason = reason
            self.endCheck = endCheck
        }
    }

    /// `bad_row`: a row that cannot be written was quarantined (`on_error: skip`).
    public struct BadRow: Sendable, Hashable {
        public var key: [String]
        public var sqlstate: String
        public var message: String
        public var detail: String?
        public var range: Int
        /// The job's quarantined rows so far, this one included.
        public var badRows: Int64
        public var worker: Int

        public init(key: [String], sqlstate: String, message: String, detail: String?, range: Int, badRows: Int64, worker: Int) {
            self.key = key
            self.sqlstate = sqlstate
            self.message = message
            self.detail = detail
            self.range = range
            self.badRows = badRows
            self.worker = worker
        }
    }

    /// `tune`: a worker's claim read new `backfill tune` overrides.
    public struct Tune: Sendable, Hashable {
        public var maxRowsPerSecond: Int
        public var target: Duration
        public var pause: Duration
        /// The workers override, nil when none.
        public var workers: Int?
        public var by: String?
        /// The overrides were cleared.
        public var reset: Bool
        /// This worker's number is at or above `workers`: it finishes.
        public var stopping: Bool
        public var worker: Int

        public init(maxRowsPerSecond: Int, target: Duration, pause: Duration, workers: Int?, by: String?, reset: Bool, stopping: Bool, worker: Int) {
            self.maxRowsPerSecond = maxRowsPerSecond
            self.target = target
            self.pause = pause
            self.workers = workers
            self.by = by
            self.reset = reset
            self.stopping = stopping
            self.worker = worker
        }
    }

    /// `connections`: the connection slots left are fewer than the run needs.
    public struct Connections: Sendable, Hashable {
        public enum State: Sendable, Hashable {
            /// At start: the run needs `needed`, `free` are left under `limit`; `workers` run (and
            /// the watchdog on or off) when fewer than asked for fit.
            case reduced(needed: Int, free: Int, limit: String, workers: Int?, watchdog: Bool?)
            /// A worker found no free slot and waits for one.
            case waiting
            case connected
        }

        public var state: State
        public var message: String
        /// The worker, for a worker's.
        public var worker: Int?

        public init(state: State, message: String, worker: Int? = nil) {
            self.state = state
            self.message = message
            self.worker = worker
        }
    }

    /// `cdc`: the job's `cdc`.
    public enum CDC: Sendable, Hashable {
        /// Before `start`: marks nothing can decode (e.g. `wal_level` below `logical`).
        case warning(message: String)
        /// A worker session set up with the replication origin `name`.
        case origin(String, worker: Int)
    }
}
