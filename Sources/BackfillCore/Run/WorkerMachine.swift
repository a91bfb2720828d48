import PostgresClient

/// The decisions of one worker as a pure value, in the style of a protocol state machine: the
/// worker reports what its last step did (`Event`), with the time and whether a stop was asked
/// for, and carries out the one `Action` the machine returns, one step of a `BatchSession` at a
/// time. Connecting and waiting for a connection slot, claiming and the steps of a batch
/// transaction, retries and their backoff, halving, the adaptive size, the live-traffic throttle
/// and the watchdog, the rate budget, health waits, pause and cancel, the time box, splitting
/// when every range is busy, retiring after `tune --workers`, a walk that does not move, and a
/// batch that failed with a data error (`on_error`: a `Bisection`, or the search for the first
/// bad key, and the bad-row limit) all live here, so that every transition is tested without a
/// database or a real clock.
struct WorkerMachine {
    /// What the machine takes from the job and the run.
    struct Settings: Sendable, Hashable {
        /// The job as its file says, before live overrides (`backfill tune`).
        var spec: JobSpec
        /// The worker's number (a `tune --workers` below it retires the worker).
        var index: Int
        var retry: JobSpec.Retry
        /// Stop this long after the run started (the time box).
        var maxRuntime: Duration?
        /// A live session that waited this long on a batch's locks makes the job back off; nil:
        /// `throttle.when_blocking` is off.
        var blockingWait: Duration?
        /// Between health checks while healthy: every batch with a WAL budget (it is charged at
        /// every check), else a second.
        var healthInterval: Duration
        /// Between the worker's progress records for `status`.
        var heartbeatInterval = Duration.seconds(2)
        /// A split is worth it only with at least this many rows left in the range.
        var splitMinimumRows: Int64

        init(spec: JobSpec, index: Int = 0, maxRuntime: Duration? = nil) {
            self.spec = spec
            self.index = index
            retry = spec.retry
            self.maxRuntime = maxRuntime
            blockingWait = spec.throttle.whenBlocking ? .milliseconds(spec.throttle.blockingWaitMs ?? spec.batch.targetMs) : nil
            healthInterval = spec.throttle.maxWalMBPerSecond > 0 ? .zero : .seconds(1)
            // A physical walk's ranges count pages.
            splitMinimumRows = spec.walk == .physical ? 64 : Int64(max(4 * spec.batch.min, 1000))
        }
    }

    /// The world when an event arrives: the run's clock, and whether a stop was asked for.
    struct Now: Sendable, Hashable {
        var elapsed: Duration
        var stopRequested = false
        /// How long this worker must still rest because another worker was told to (blocking).
        var sharedRest: Duration = .zero
    }

    /// Where the worker is. Every event is judged against it; one that cannot happen in it is a
    /// programmer error, and fails the worker naming both (`invalid(_:)`).
    enum State: Sendable, Hashable {
        /// Connecting: the first time (`lost` nil) or again after a lost connection; waiting for
        /// a connection slot since `slotWaitSince`.
        case connecting(lost: LostConnection?, slotWaitSince: Duration?)
        /// Between steps: the next decision is due (`next`).
        case idle
        /// Resting; then what comes after.
        case resting(then: AfterRest)
        /// Recording the worker's progress, then the next piece of work.
        case heartbeating
        /// Reading the health signals; while they said to wait, since when and why.
        case checkingHealth(HealthWait?)
        /// Recording a health wait in the store (a reason, or nil as it ends), then going on.
        case recordingThrottle(HealthWait?, then: AfterThrottle)
        /// Reading the job's state during a health wait (a pause or cancel ends it).
        case readingJobState(HealthWait)
        /// A batch transaction is open (from its claim on).
        case transaction(Step)
        /// Rolling the open transaction back, then `then`.
        case closing(then: AfterClose)
        /// Asking how many ranges are open (every one was busy).
        case countingRanges
        case splitting
        /// Taking the committed rows from the rate budget.
        case consumingRate
        /// Reading a bisection's split point (`on_error: skip`).
        case findingSplit(range: Int, lower: [String]?)
        /// Searching the failed batch's first bad key in a transaction rolled back at its end
        /// (`on_error: stop`).
        case searchingBadKey(Bisection, DataError, SearchStep)
        /// Done: finished, stopped or failed; no event is expected.
        case ended
    }

    /// The step of the bad-key search in flight.
    enum SearchStep: Sendable, Hashable {
        case opening, splitting, probing, undoing
    }

    /// The connection lost by a batch, kept for the failure if reconnecting gives up.
    struct LostConnection: Sendable, Hashable {
        var range: Int?
        var afterKey: [String]?
    }

    /// A health wait under way.
    struct HealthWait: Sendable, Hashable {
        var reason: ThrottleReason
        var since: Duration
        var retryAfter: Duration
    }

    enum AfterRest: Sendable, Hashable {
        case next
        case connect(lost: LostConnection?, slotWaitSince: Duration?)
        /// Read the job's state, then the health signals again.
        case healthRecheck(HealthWait)
    }

    enum AfterThrottle: Sendable, Hashable {
        /// Rest before checking again.
        case rest
        /// The wait ended: go on with a batch.
        case work
        case stop(StopReason)
    }

    /// The steps of a batch transaction.
    enum Step: Sendable, Hashable {
        case claiming(Batch)
        case bounding(RangeClaim, size: Int, bySpan: Bool)
        case checkingFirstKey(BatchWrite)
        case writing(BatchWrite)
        case quarantining(BatchWrite, PostgresError)
        case committingQuarantine(BatchWrite, PostgresError, badRows: Int64)
        case completingRange(RangeClaim)
    }

    /// What a batch transaction walks: the next keys of a range, or a part of a failed batch
    /// being bisected (which must start at the range's checkpoint).
    enum Batch: Sendable, Hashable {
        case next(size: Int)
        case part(range: Int, lower: [String]?, upper: [String], keys: Int)
    }

    enum AfterClose: Sendable, Hashable {
        case stop(StopReason)
        /// `backfill tune --workers` asked for fewer workers than this one's number.
        case retire
        /// Every open range was in another worker's batch.
        case busy
        /// The part's range is not where the bisection stands (another worker moved it).
        case lost
        /// A part of one key has this key before it (a row inserted since it was counted).
        case firstKey([String])
        case fail(RunFailure)
        /// A step failed: judge the failure once the transaction is closed.
        case failure(Failure)
        /// The bad-key search ended: the first key whose row cannot be written, if found.
        case badKey([String]?, DataError)
    }

    /// A failed step, as the machine judges it.
    struct Failure: Sendable, Hashable {
        var error: PostgresError
        var duration: Duration
        var range: Int?
        var afterKey: [String]?
        var watchdogWaited: Duration?
        /// The batch whose statement failed, if it was one.
        var write: BatchWrite?
    }

    /// The data error that started a bad-key search or a bisection, for the job's failure.
    struct DataError: Sendable, Hashable {
        var error: PostgresError
        var range: Int
        var afterKey: [String]?
    }

    /// Where the walk is: batches of keys, or the bisection of a failed batch (`on_error: skip`).
    enum Mode: Sendable, Hashable {
        case walking
        case bisecting(Bisection)
    }

    var state: State
    var mode: Mode = .walking
    var settings: Settings
    var sizer: BatchSizer
    /// The job with the live overrides the last claim read (`backfill tune`).
    var tuning: Tuning?
    var tuned: JobSpec
    /// What the health signals say (the slow ones are read once a second).
    var judge: HealthJudge
    /// Retries and reconnects: the rule batches share with the finalizer.
    var retries: RetryLoop
    /// Which try of the current batch the next run is (1-based).
    var attempt: Int { retries.attempt }
    var notes: [Note] = []
    /// How this worker's batches find their upper key (a dense integer key: by arithmetic).
    var density = KeyDensity()
    /// The range this worker walked last; it claims it first again.
    var preferred: Int?
    var rowsDone: Int64 = 0
    var lastHealthCheck: Duration?
    var lastHeartbeat: Duration?
    /// The rest owed after the committed batch, while the rate budget is asked.
    var owedRest: (duration: Duration, everyWorker: Bool) = (.zero, false)

    init(settings: Settings, state: State = .connecting(lost: nil, slotWaitSince: nil), mode: Mode = .walking) {
        self.settings = settings
        self.state = state
        self.mode = mode
        tuned = settings.spec
        retries = RetryLoop(settings.spec.retry)
        judge = HealthJudge(throttle: settings.spec.throttle)
        let batch = settings.spec.batch
        sizer = BatchSizer(initial: batch.size, min: batch.min, max: batch.max, targetMs: batch.targetMs)
    }

    /// The first action: connect.
    mutating func start() -> Action {
        state = .connecting(lost: nil, slotWaitSince: nil)
        return .connect
    }

    /// Returns and clears the notes of the decisions since the last call.
    mutating func drainNotes() -> [Note] {
        defer { notes = [] }
        return notes
    }

    /// Whether the run must stop now, and why.
    func stopReason(at now: Now) -> StopReason? {
        if now.stopRequested { return .signal }
        if let max = settings.maxRuntime, now.elapsed >= max { return .timeBox }
        return nil
    }

    /// The next step between batches: stop, reconnect, rest while another worker's rest lasts,
    /// check the health signals when due, or work.
    mutating func next(at now: Now) -> Action {
        if let reason = stopReason(at: now) { return end(.stop(reason)) }
        if now.sharedRest > .zero { return rest(now.sharedRest, then: .next) }
        if lastHealthCheck.map({ now.elapsed - $0 >= settings.healthInterval }) ?? true { return checkHealth(nil, at: now) }
        return work(at: now)
    }

    /// The next piece of work: the heartbeat when due, then the bisection's next step while
    /// one is under way, else a batch.
    mutating func work(at now: Now) -> Action {
        if lastHeartbeat.map({ now.elapsed - $0 >= settings.heartbeatInterval }) ?? true {
            lastHeartbeat = now.elapsed
            state = .heartbeating
            return .heartbeat(range: preferred, rowsDone: rowsDone)
        }
        if case .bisecting(let bisection) = mode {
            switch bisection.step {
            case .finished:
                mode = .walking
            case .split(let lower, let upper, let offset):
                state = .findingSplit(range: bisection.range, lower: lower)
                return .splitPoint(lower: lower, upper: upper, offset: offset)
            case .attempt(let lower, let upper, let keys):
                return claim(.part(range: bisection.range, lower: lower, upper: upper, keys: keys))
            }
        }
        return claim(.next(size: sizer.size))
    }

    /// Reads the health signals, the slow ones when due (due again a second later even when the
    /// reading fails).
    mutating func checkHealth(_ wait: HealthWait?, at now: Now) -> Action {
        state = .checkingHealth(wait)
        let slow = judge.isDue(at: now.elapsed.seconds)
        if slow { judge.slowSignalsRead(at: now.elapsed.seconds) }
        return .readHealth(slow: slow)
    }

    private mutating func claim(_ batch: Batch) -> Action {
        state = .transaction(.claiming(batch))
        if case .part(let range, _, _, _) = batch { return .claim(preferring: range) }
        return .claim(preferring: preferred)
    }

    mutating func rest(_ duration: Duration, everyWorker: Bool = false, then: AfterRest) -> Action {
        state = .resting(then: then)
        return .rest(duration, everyWorker: everyWorker)
    }

    /// Rolls the open transaction back, then goes on with `then`.
    mutating func close(then: AfterClose) -> Action {
        state = .closing(then: then)
        return .rollback
    }

    mutating func end(_ action: Action) -> Action {
        state = .ended
        return action
    }

    /// An event that cannot happen in the state the machine is in: a programmer error.
    mutating func invalid(_ event: Event) -> Action {
        end(.fail(RunFailure(message: "internal error: the worker's machine got \(event) in state \(state)")))
    }
}

extension WorkerMachine {
    enum Event: Sendable, Hashable {
        /// The session connected (with the replication origin it marks commits with).
        case connected(origin: String?)
        /// No connection slot was free: whether another worker holds a connection and whether one
        /// found the walk done.
        case noSlot(PostgresError, othersConnected: Bool, walkDone: Bool)
        /// A step failed, after running this long; the watchdog's word if it cancelled it.
        case failed(PostgresError, after: Duration, watchdogWaited: Duration?)
        /// A step failed with an error that is not the database's.
        case unexpected(String)
        /// A step that reports nothing is done (a rest, a rollback, a heartbeat, a throttle
        /// recorded, a range completed, a probe opened or undone).
        case done
        case health(HealthReading)
        case jobState(JobState?)
        case claimed(RangeClaim?)
        case upperKey(UpperKey?)
        case firstKey([String]?)
        /// The batch committed after running this long.
        case written(Written, after: Duration)
        case quarantined(badRows: Int64)
        case rateWait(Duration)
        case openRanges(Int)
        /// A split was tried; whether it made a new range.
        case split(Bool)
        case splitPoint(key: [String]?, walked: Int)
    }

    enum Action: Sendable, Hashable {
        case connect
        case rest(Duration, everyWorker: Bool)
        case heartbeat(range: Int?, rowsDone: Int64)
        /// Read the health signals; the slow ones (replicas, slots, archiving, `check_sql`,
        /// autovacuum) when they are due.
        case readHealth(slow: Bool)
        case setThrottle(ThrottleReason?, detail: String?)
        case readJobState
        case claim(preferring: Int?)
        case upperKey(RangeClaim, size: Int, bySpan: Bool)
        case firstKey(RangeClaim, atMost: [String])
        case completeRange(RangeClaim)
        case write(BatchWrite)
        case quarantine(BatchWrite, PostgresError)
        case commitQuarantine(BatchWrite)
        case rollback
        case consumeRate(rows: Int64, rowsPerSecond: Int)
        case openRanges
        case split(minimumRows: Int64)
        case splitPoint(lower: [String]?, upper: [String], offset: Int)
        case beginProbe
        case probe(lower: [String]?, upper: [String])
        case undoProbe
        case stop(StopReason)
        /// No range is left (or this worker retired): the worker is done.
        case finish
        case fail(RunFailure)
    }

    /// Something worth telling the operator about the last decision (an event, a counter).
    enum Note: Sendable, Hashable {
        case committed(BatchWrite, Written, duration: Duration, nextSize: Int)
        case retry(reason: RetryReason, attempt: Int, delay: Duration, nextSize: Int, error: PostgresError?, after: Duration?)
        case blocking(waiters: Int, longestWait: Duration, rest: Duration, nextSize: Int)
        /// The watchdog cancelled a batch that live traffic waited on.
        case watchdog(waited: Duration, rest: Duration, nextSize: Int)
        case rateLimited(wait: Duration)
        case healthWaiting(ThrottleReason, detail: String)
        /// A health wait ended; `resumed` false when the run stopped during it.
        case healthEnded(ThrottleReason, waited: Duration, resumed: Bool)
        case badRow(key: [String], error: PostgresError, range: Int, badRows: Int64)
        case tuned(Tuning?, applied: JobSpec, retiring: Bool)
        case slotWaiting(PostgresError)
        case slotFound
        case origin(String)
    }
}
