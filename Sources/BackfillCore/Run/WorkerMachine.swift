import PostgresClient

/// Why a run failed, carried to the exit message, the JSON `error` event and `last_error`.
public struct RunFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The SQLSTATE, when the database reported the failure.
    public var sqlstate: String?
    /// The range the failing batch walked, and the key after which it started (nil: the
    /// range's start).
    public var range: Int?
    public var afterKey: [String]?
    /// The key whose row could not be written, when the failing batch was bisected to find it.
    public var key: [String]?
    /// How often the batch was tried, and whether the retries ran out.
    public var attempts: Int
    public var exhausted: Bool
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(sqlstate: String? = nil, range: Int? = nil, afterKey: [String]? = nil, key: [String]? = nil, attempts: Int = 1, exhausted: Bool = false,
                message: String, detail: String? = nil, hint: String? = nil) {
        self.sqlstate = sqlstate
        self.range = range
        self.afterKey = afterKey
        self.key = key
        self.attempts = attempts
        self.exhausted = exhausted
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// Any other error, as a failure.
    public init(_ error: any Error) {
        if let error = error as? RunFailure {
            self = error
        } else if let error = error as? PostgresError {
            self.init(sqlstate: error.code.raw, message: error.message, detail: error.detail, hint: error.hint)
        } else {
            self.init(message: "\(error)")
        }
    }

    public var description: String {
        var text = ""
        if let range {
            text += "batch in range \(range) after key \(afterKey.map { "(" + $0.joined(separator: ", ") + ")" } ?? "(start)") failed"
            if let key { text += " at key (\(key.joined(separator: ", ")))" }
            text += exhausted ? " \(attempts) times, giving up: " : ": "
        }
        if let sqlstate { text += "SQLSTATE \(sqlstate) " }
        text += message
        if let detail { text += " (\(detail))" }
        if let hint { text += " (hint: \(hint))" }
        return text
    }
}

/// The decisions of one worker as a pure value, in the style of a protocol state machine: the
/// I/O shell (`Worker`) reports what happened (`Event`), with the time and whether a stop was
/// asked for, and carries out the one `Action` the machine returns. Retries and their backoff,
/// halving, the adaptive size, the blocking throttle, the rate budget, pauses, health checks,
/// splitting when every range is busy, stops, the time box, pause and cancel, and what a batch
/// that failed with a data error leads to (`on_error`: a `Bisection`, or the search for the
/// first bad key) all live here, so
/// that every transition is tested without a database or a real clock.
struct WorkerMachine {
    /// What the machine takes from the job and the run.
    struct Settings: Sendable, Hashable {
        var batch: JobSpec.Batch
        var retry: RetryPolicy
        var reconnectTimeoutMs: Int
        /// Stop after this many seconds of the run (the time box).
        var maxRuntime: Double?
        /// A live session that waited this long on a batch's locks makes the job back off; nil:
        /// `throttle.when_blocking` is off.
        var blockingWaitMs: Double?
        /// Whether `throttle.max_rows_per_second` is set (the budget lives in the store).
        var rateLimited: Bool { rowsPerSecond > 0 }
        /// `throttle.max_rows_per_second`, or its live override; 0 = unlimited.
        var rowsPerSecond: Int
        /// Seconds between health checks while healthy.
        var healthInterval: Double
        /// A split is worth it only with at least this many rows left in the range.
        var splitMinimumRows: Int64
        /// What a batch that fails with a data error does (`on_error`).
        var onError: JobSpec.OnError

        init(spec: JobSpec, maxRuntime: Double?, healthInterval: Double = 1) {
            batch = spec.batch
            retry = RetryPolicy(spec.retry)
            reconnectTimeoutMs = spec.retry.reconnectTimeoutMs
            self.maxRuntime = maxRuntime
            blockingWaitMs = spec.throttle.whenBlocking ? Double(spec.throttle.blockingWaitMs ?? spec.batch.targetMs) : nil
            rowsPerSecond = spec.throttle.maxRowsPerSecond
            self.healthInterval = healthInterval
            splitMinimumRows = Int64(max(4 * spec.batch.min, 1000))
            onError = spec.onError
        }
    }

    /// The world when an event arrives: the run's clock, and whether a stop was asked for.
    struct Now: Sendable, Hashable {
        var seconds: Double
        var stopRequested = false
        /// How long this worker must still rest because another worker was told to (blocking).
        var sharedRestMs: Double = 0
    }

    enum Event: Sendable, Hashable {
        /// Nothing to report: the worker starts, or a rest ended. Decide what to do next.
        case ready
        /// The health signals allow work.
        case healthy
        /// A batch committed: rows changed, keys walked, its wall time, who waited on it.
        case committed(rows: Int64, keys: Int, ms: Double, waiters: Waiters)
        /// The rate budget says to wait this long before the next batch.
        case rateWait(seconds: Double)
        /// The claimed range has no key left.
        case rangeDone
        /// Every open range is in another worker's batch right now.
        case busy(openRanges: Int)
        /// A split was tried; whether it made a new range.
        case split(Bool)
        /// The job was paused or cancelled (seen while claiming).
        case jobState(JobState)
        /// The batch failed and rolled back.
        case failed(PostgresError, range: Int?, afterKey: [String]?)
        /// The batch statement itself failed and rolled back: the batch after `lower` up to
        /// `upper`, `keys` keys, in `range` (a data error there starts a bisection).
        case batchFailed(PostgresError, range: Int, lower: [String]?, upper: [String], keys: Int)
        /// A bisection's split query landed on `key` (nil: no key left in the part), `walked`
        /// keys into the part.
        case splitFound(key: [String]?, walked: Int)
        /// A single key tried alone found this key before it (a row inserted meanwhile).
        case firstKey([String])
        /// A single key tried alone failed: its row was quarantined in the transaction that moved
        /// the checkpoint past it.
        case quarantined
        /// Another worker moved the range being bisected (its checkpoint is not where the
        /// bisection stands): the bisection ends, and batches go on from the checkpoint.
        case bisectionLost
        /// The search for a stopping job's bad key ended: the first key whose row cannot be
        /// written, or nil when no single key failed on its own.
        case badKeyFound([String]?)
        /// The watchdog cancelled the batch: a live session had waited this long on its locks.
        case cancelledForWaiters(waitedMs: Double)
        /// A new connection is ready.
        case reconnected
        /// Connecting again failed.
        case reconnectFailed(PostgresError)
    }

    enum Action: Sendable, Hashable {
        /// Read the health signals (and wait while they say so).
        case checkHealth
        /// Run one batch of this many keys.
        case runBatch(size: Int)
        /// Carry out one step of the bisection of a failed batch in `range` (`on_error: skip`).
        case bisect(range: Int, step: Bisection.Step)
        /// Find the first key of the failed batch whose row cannot be written, in a transaction
        /// that is rolled back (`on_error: stop`); report it with `badKeyFound`.
        case findBadKey(Bisection)
        /// Take the committed rows from the job's rate budget.
        case consumeRate(rows: Int64)
        /// Rest this long (in slices, so that a stop is quick), then report `.ready`; with
        /// `everyWorker`, every worker of the process rests as long (live traffic waited).
        case rest(ms: Int, everyWorker: Bool)
        /// Every range is busy: split the largest.
        case split
        /// Connect again (the connection was lost), then report `.reconnected`.
        case reconnect
        case stop(StopReason)
        /// No range is left: the worker is done.
        case finish
        case fail(RunFailure)
    }

    /// Something worth telling the operator about the last decision.
    enum Note: Sendable, Hashable {
        case retry(reason: RetryReason, attempt: Int, delayMs: Int, nextSize: Int)
        case blocking(waiters: Int, longestWaitMs: Double, restMs: Double, nextSize: Int)
        /// The watchdog cancelled a batch that live traffic waited on.
        case watchdog(waitedMs: Double, restMs: Double, nextSize: Int)
        case rateLimited(waitMs: Double)
    }

    private(set) var settings: Settings
    private(set) var sizer: BatchSizer
    /// Which try of the current batch the next run is (1-based).
    private(set) var attempt = 1
    private(set) var notes: [Note] = []
    private var lastHealthCheck = -Double.infinity
    /// The rest owed after the committed batch, while the rate budget is asked.
    private var owedRestMs: Double = 0
    private var owedEveryWorker = false
    /// Since when connecting again has failed.
    private var reconnectingSince: Double?
    private var failedAttempt: (error: PostgresError, range: Int?, afterKey: [String]?)?
    /// The bisection under way (`on_error: skip`), or the failure whose key a stopping job is
    /// looking for (`on_error: stop`).
    private(set) var bisection: Bisection?
    private var dataError: (error: PostgresError, range: Int, afterKey: [String]?)?

    init(settings: Settings) {
        self.settings = settings
        sizer = BatchSizer(initial: settings.batch.size, min: settings.batch.min, max: settings.batch.max, targetMs: settings.batch.targetMs)
    }

    /// Takes live overrides (`backfill tune`) from the next batch on: the rate budget, the
    /// batch's target time (the sizer aims at it) and the rest between batches.
    mutating func tune(rowsPerSecond: Int, targetMs: Int, pauseMs: Int) {
        settings.rowsPerSecond = rowsPerSecond
        settings.batch.targetMs = targetMs
        settings.batch.pauseMs = pauseMs
        sizer.retarget(targetMs: targetMs)
    }

    /// Returns and clears the notes of the decisions since the last call.
    mutating func drainNotes() -> [Note] {
        defer { notes = [] }
        return notes
    }

    /// Whether the run must stop now, and why.
    func stopReason(at now: Now) -> StopReason? {
        if now.stopRequested { return .signal }
        if let max = settings.maxRuntime, now.seconds >= max { return .timeBox }
        return nil
    }

    mutating func handle(_ event: Event, at now: Now, random: Double = Double.random(in: 0..<1)) -> Action {
        switch event {
        case .ready:
            return next(at: now)
        case .healthy:
            lastHealthCheck = now.seconds
            if let reason = stopReason(at: now) { return .stop(reason) }
            return work()
        case .committed(let rows, let keys, let ms, let waiters):
            attempt = 1
            // A part of a bisection is no measure of a batch's cost.
            if bisection == nil { sizer.record(keys: keys, durationMs: ms) } else { bisection?.written() }
            owedRestMs = Double(settings.batch.pauseMs)
            owedEveryWorker = false
            if let limit = settings.blockingWaitMs, waiters.count > 0, waiters.longestMs >= limit {
                // Live traffic waited on this batch's locks longer than allowed: halve the batch,
                // and rest (every worker of this process) so that the waiters get through.
                sizer.shrink(by: 0.5)
                let rest = max(ms, Double(settings.batch.targetMs))
                notes.append(.blocking(waiters: waiters.count, longestWaitMs: waiters.longestMs, restMs: rest, nextSize: sizer.size))
                owedRestMs = max(owedRestMs, rest)
                owedEveryWorker = true
            }
            if settings.rateLimited { return .consumeRate(rows: rows) }
            return restOwed(at: now)
        case .rateWait(let seconds):
            if seconds > 0 {
                notes.append(.rateLimited(waitMs: seconds * 1000))
                owedRestMs = max(owedRestMs, seconds * 1000)
            }
            return restOwed(at: now)
        case .rangeDone:
            return next(at: now)
        case .busy(let open):
            if open == 0 { return .finish }
            if let reason = stopReason(at: now) { return .stop(reason) }
            return .split
        case .split(let happened):
            return happened ? next(at: now) : .rest(ms: 100, everyWorker: false)
        case .jobState(let state):
            return .stop(state == .cancelled ? .cancelled : .paused)
        case .batchFailed(let error, let range, let lower, let upper, let keys):
            guard Bisection.isolates(error) else { return handle(.failed(error, range: range, afterKey: lower), at: now, random: random) }
            attempt = 1
            if let current = bisection {
                // A single key is tried under a savepoint and quarantined by the worker; its failure
                // getting here (outside the savepoint) must not pass over it unrecorded.
                if case .attempt(_, let key, 1) = current.step {
                    bisection = nil
                    return .fail(RunFailure(sqlstate: error.code.raw, range: range, afterKey: lower, key: key, attempts: attempt,
                                            message: error.message + " (its row could not be quarantined: the error came after its savepoint)",
                                            detail: error.detail, hint: error.hint))
                }
                // A part of the bisection failed as a whole: split it next.
                bisection?.failed()
                return next(at: now)
            }
            let search = Bisection(range: range, lower: lower, upper: upper, keys: keys)
            dataError = (error, range, lower)
            switch settings.onError.action {
            case .stop: return .findBadKey(search)
            case .skip:
                bisection = search
                return next(at: now)
            }
        case .splitFound(let key, let walked):
            bisection?.split(at: key, walked: walked)
            return next(at: now)
        case .firstKey(let key):
            bisection?.found(first: key)
            return next(at: now)
        case .quarantined:
            attempt = 1
            bisection?.failed()
            return next(at: now)
        case .bisectionLost:
            bisection = nil
            return next(at: now)
        case .badKeyFound(let key):
            let (error, range, afterKey) = dataError ?? (PostgresError(code: .clientError, message: "a batch failed with a data error"), 0, nil)
            return .fail(RunFailure(
                sqlstate: error.code.raw, range: range, afterKey: afterKey, key: key, attempts: attempt,
                message: error.message + " (on_error: stop; nothing after the checkpoint was committed; to write every other row and quarantine bad ones, set `on_error: {action: skip}`)",
                detail: error.detail, hint: error.hint))
        case .failed(let error, let range, let afterKey):
            // Nothing is retried blindly: every try starts again from the committed checkpoint,
            // so trying again after any failure never applies a batch twice.
            if now.stopRequested, error.code == .queryCanceled || error.isConnectionLost { return .stop(.signal) }
            switch settings.retry.decide(error, attempt: attempt, random: random) {
            case .fail(let exhausted):
                return .fail(RunFailure(
                    sqlstate: error.code.raw, range: range, afterKey: afterKey, attempts: attempt, exhausted: exhausted,
                    message: error.message, detail: error.detail, hint: error.hint))
            case .retry(let reason, let delayMs, let halve, let reconnect):
                if halve { sizer.halve() }
                notes.append(.retry(reason: reason, attempt: attempt, delayMs: delayMs, nextSize: sizer.size))
                attempt += 1
                if reconnect {
                    failedAttempt = (error, range, afterKey)
                    reconnectingSince = reconnectingSince ?? now.seconds
                    return .reconnect
                }
                return .rest(ms: delayMs, everyWorker: false)
            }
        case .cancelledForWaiters(let waited):
            // The batch rolled back: halve it, and let every worker rest so the waiters get through.
            sizer.halve()
            let rest = max(Double(settings.batch.targetMs), settings.blockingWaitMs ?? 0)
            notes.append(.watchdog(waitedMs: waited, restMs: rest, nextSize: sizer.size))
            if let reason = stopReason(at: now) { return .stop(reason) }
            return .rest(ms: Int(rest.rounded(.up)), everyWorker: true)
        case .reconnected:
            reconnectingSince = nil
            failedAttempt = nil
            return next(at: now)
        case .reconnectFailed(let error):
            if let reason = stopReason(at: now) { return .stop(reason) }
            let since = reconnectingSince ?? now.seconds
            reconnectingSince = since
            guard (now.seconds - since) * 1000 < Double(settings.reconnectTimeoutMs) else {
                return .fail(RunFailure(
                    sqlstate: error.code.raw, range: failedAttempt?.range, afterKey: failedAttempt?.afterKey, attempts: attempt, exhausted: true,
                    message: "lost the connection and could not reconnect within \(settings.reconnectTimeoutMs) ms: \(error.message)"))
            }
            let delay = settings.retry.delay(attempt: attempt + 1, random: 0.5 + random / 2)
            notes.append(.retry(reason: .connectionLost, attempt: attempt, delayMs: delay, nextSize: sizer.size))
            attempt += 1
            return .rest(ms: delay, everyWorker: false)
        }
    }

    /// The next step between batches: stop, rest while another worker's rest lasts, check the
    /// health signals when due, or run a batch.
    private mutating func next(at now: Now) -> Action {
        if let reason = stopReason(at: now) { return .stop(reason) }
        if reconnectingSince != nil { return .reconnect }
        if now.sharedRestMs > 0 { return .rest(ms: Int(now.sharedRestMs.rounded(.up)), everyWorker: false) }
        if now.seconds - lastHealthCheck >= settings.healthInterval { return .checkHealth }
        return work()
    }

    /// The next piece of work: the bisection's next step while one is under way, else a batch.
    private mutating func work() -> Action {
        if let bisection {
            if case .finished = bisection.step {
                self.bisection = nil
            } else {
                return .bisect(range: bisection.range, step: bisection.step)
            }
        }
        return .runBatch(size: sizer.size)
    }

    private mutating func restOwed(at now: Now) -> Action {
        let rest = owedRestMs
        let everyWorker = owedEveryWorker
        owedRestMs = 0
        owedEveryWorker = false
        if rest > 0 { return .rest(ms: Int(rest.rounded(.up)), everyWorker: everyWorker) }
        return next(at: now)
    }
}
