import PostgresClient

/// What one worker's session does against the database: one method per step of a batch
/// transaction (claim, upper key, write with its checkpoint, roll back), and the steps between
/// batches (health readings, the rate budget, splitting, the heartbeat). It decides nothing: the
/// `WorkerMachine` says which step comes next, and every failure is thrown back to it as it came.
/// `PostgresBatchSession` implements it on libpq; the tests script it.
///
/// A failed step leaves its transaction as it is; the machine always ends it (`rollback`), or
/// goes on under a savepoint (a part of one key, a probe of the bad-key search).
protocol BatchSession: AnyObject {
    /// Connects, or connects again after a lost connection (the old one is closed first). Returns
    /// the replication origin the session marks its commits with (`cdc.origin`), if any.
    func connect() throws -> String?
    func disconnect()

    /// Opens a batch transaction and claims a range in it (the one preferred, if free), in one
    /// round trip; nil when every open range is in another transaction.
    func claim(preferring range: Int?) throws -> RangeClaim?
    /// The batch's upper key: the greatest key of the claimed range at most `size` keys past its
    /// checkpoint, by arithmetic on a dense integer key (`bySpan`) or counted through the key's
    /// index; nil when no key is left (or, by span, none in the span).
    func upperKey(_ claim: RangeClaim, size: Int, bySpan: Bool) throws -> UpperKey?
    /// The first key after the claim's checkpoint, at most `upper` (a part of one key checks that
    /// no row was inserted before it since it was counted).
    func firstKey(_ claim: RangeClaim, atMost upper: [String]) throws -> [String]?
    /// Marks the claimed range walked to its end and ends the transaction.
    func completeRange(_ claim: RangeClaim) throws
    /// The batch statement, its checkpoint and `COMMIT` (in one round trip where the action
    /// allows). A part of one key is written under a savepoint (`write.single`).
    func write(_ write: BatchWrite) throws -> Written
    /// Rolls the part of one key back to its savepoint and records its row as bad; returns the
    /// job's bad rows, this one included. The transaction stays open.
    func quarantine(_ write: BatchWrite, error: PostgresError) throws -> Int64
    /// Moves the checkpoint past the quarantined key and commits.
    func commitQuarantine(_ write: BatchWrite) throws
    /// Ends the transaction in progress, if any, without committing; never fails.
    func rollback()

    /// The key `offset` keys past the first after `lower`, at most `upper`, and how many keys
    /// that is (a bisection's split point), in a transaction of its own unless one is open.
    func splitPoint(lower: [String]?, upper: [String], offset: Int) throws -> (key: [String], walked: Int)?
    /// Opens the transaction of the bad-key search (rolled back at its end).
    func beginProbe() throws
    /// Writes the keys after `lower` up to `upper` under a savepoint, released when it worked.
    func probe(lower: [String]?, upper: [String]) throws
    /// Rolls a failed probe back to its savepoint.
    func undoProbe() throws

    /// Reads the health signals (the slow ones when `slow`); the machine judges them.
    func readHealth(slow: Bool) throws -> HealthReading
    func setThrottle(_ reason: ThrottleReason?, detail: String?) throws
    func jobState() throws -> JobState?
    /// Takes `rows` from the job's rate budget; returns how long to wait.
    func consumeRate(rows: Int64, rowsPerSecond: Int) throws -> Duration
    func openRanges() throws -> Int
    func splitLargestRange(minimumRows: Int64) throws -> Bool
    /// Records the worker's progress for `status` (best effort).
    func heartbeat(range: Int?, rowsDone: Int64)
    /// How long a live session had waited when the watchdog cancelled the last statement; nil
    /// when it did not.
    var watchdogWaited: Duration? { get }
}

/// What a health check found: the first reason to wait with every reason's detail, and when
/// to check again while it holds.
struct HealthFinding: Sendable, Hashable {
    var reason: ThrottleReason?
    var detail: String
    var retryAfter: Duration
}

/// A batch's upper key and the keys from the checkpoint to it.
struct UpperKey: Sendable, Hashable {
    var key: [String]
    var walked: Int
    /// How it was found (the batch event's `bound`).
    var bound: Bound

    /// By arithmetic on a dense integer key (`span`), or counted through the key's index.
    typealias Bound = RunEvent.Batch.Bound
}

/// The batch a worker writes: the claimed range's keys after its checkpoint up to `upper`.
struct BatchWrite: Sendable, Hashable {
    var claim: RangeClaim
    var upper: [String]
    /// The keys from the checkpoint to `upper`, and the size the batch was asked to be.
    var keys: Int
    var size: Int
    var bound: UpperKey.Bound
    /// A part of one key of a bisection, written under a savepoint.
    var single = false
    /// The try of this batch (for its event).
    var attempt = 1
}

/// What a written batch's statements report.
struct Written: Sendable, Hashable {
    var rows: Int64
    /// Rows the statement changed outside its key range (the in-memory store's check).
    var outside: Int64 = 0
    var waiters = Waiters(count: 0, longestMs: 0)
    /// The WAL and HOT share of the batch (the batch event's cost fields).
    var walBytes: Int64?
    var hotShare: Double?
}
