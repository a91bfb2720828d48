import PostgresClient

/// The machine's transitions: every event judged against the state it arrives in.
extension WorkerMachine {
    mutating func handle(_ event: Event, at now: Now, random: Double = Double.random(in: 0..<1)) -> Action {
        if case .failed(let error, let after, let watchdog) = event { return failed(error, after: after, watchdog: watchdog, at: now, random: random) }
        if case .unexpected(let message) = event { return unexpected(message) }
        switch (state, event) {
        case (.connecting(let lost, let since), .connected(let origin)):
            if let origin { notes.append(.origin(origin)) }
            if since != nil { notes.append(.slotFound) }
            if lost != nil { retries.reconnected() }
            state = .idle
            return next(at: now)
        case (.connecting(let lost, let since), .noSlot(let error, let othersConnected, let walkDone)):
            if let reason = stopReason(at: now) { return end(.stop(reason)) }
            if walkDone { return end(.finish) }
            let began = since ?? now.elapsed
            // Alone, a worker waits for a slot only as long as it would for a reconnect.
            if !othersConnected, now.elapsed - began >= .milliseconds(settings.retry.reconnectTimeoutMs) { return connectFailed(error, lost: lost, at: now, random: random) }
            if since == nil { notes.append(.slotWaiting(error)) }
            return rest(.seconds(1), then: .connect(lost: lost, slotWaitSince: began))
        case (.resting(let then), .done):
            switch then {
            case .next:
                state = .idle
                return next(at: now)
            case .connect(let lost, let since):
                state = .connecting(lost: lost, slotWaitSince: since)
                return .connect
            case .healthRecheck(let wait):
                if let reason = stopReason(at: now) {
                    notes.append(.healthEnded(wait.reason, waited: now.elapsed - wait.since, resumed: false))
                    return end(.stop(reason))
                }
                state = .readingJobState(wait)
                return .readJobState
            }
        case (.readingJobState(let wait), .jobState(let jobState)):
            if let reason = StopReason(jobState: jobState) {
                notes.append(.healthEnded(wait.reason, waited: now.elapsed - wait.since, resumed: false))
                state = .recordingThrottle(nil, then: .stop(reason))
                return .setThrottle(nil, detail: nil)
            }
            return checkHealth(wait, at: now)
        case (.checkingHealth(let wait), .health(let reading)):
            let found = judge.judge(reading, at: now.elapsed.seconds)
            let finding = HealthFinding(reason: found?.0, detail: found?.1 ?? "", retryAfter: .milliseconds(Int64((judge.retryAfter * 1000).rounded())))
            return health(finding, waiting: wait, at: now)
        case (.recordingThrottle(let wait, let then), .done):
            switch then {
            case .rest:
                guard let wait else { return invalid(event) }
                return rest(wait.retryAfter, then: .healthRecheck(wait))
            case .work:
                lastHealthCheck = now.elapsed
                if let reason = stopReason(at: now) { return end(.stop(reason)) }
                return work(at: now)
            case .stop(let reason):
                return end(.stop(reason))
            }
        case (.heartbeating, .done):
            return work(at: now)
        case (.transaction(let step), _):
            return transaction(step, event, at: now)
        case (.closing(let then), .done):
            return closed(then, at: now, random: random)
        case (.consumingRate, .rateWait(let wait)):
            if wait > .zero {
                notes.append(.rateLimited(wait: wait))
                owedRest.duration = max(owedRest.duration, wait)
            }
            return restOwed(at: now)
        case (.countingRanges, .openRanges(let open)):
            if open == 0 { return end(.finish) }
            if let reason = stopReason(at: now) { return end(.stop(reason)) }
            state = .splitting
            return .split(minimumRows: settings.splitMinimumRows)
        case (.splitting, .split(let happened)):
            guard happened else { return rest(.milliseconds(100), then: .next) }
            state = .idle
            return next(at: now)
        case (.findingSplit, .splitPoint(let key, let walked)):
            guard case .bisecting(var bisection) = mode else { return invalid(event) }
            bisection.split(at: key, walked: walked)
            mode = .bisecting(bisection)
            state = .idle
            return next(at: now)
        case (.searchingBadKey(var search, let dataError, let step), _):
            switch (step, event) {
            case (.opening, .done): break
            case (.probing, .done): search.written()
            case (.splitting, .splitPoint(let key, let walked)): search.split(at: key, walked: walked)
            case (.undoing, .done):
                if let key = search.failed() { return close(then: .badKey(key, dataError)) }
            default: return invalid(event)
            }
            return searchStep(search, dataError)
        default:
            return invalid(event)
        }
    }

    /// A health reading: start, go on with or end a wait.
    private mutating func health(_ finding: HealthFinding, waiting wait: HealthWait?, at now: Now) -> Action {
        guard let wait else {
            guard let reason = finding.reason else {
                lastHealthCheck = now.elapsed
                if let stop = stopReason(at: now) { return end(.stop(stop)) }
                return work(at: now)
            }
            notes.append(.healthWaiting(reason, detail: finding.detail))
            state = .recordingThrottle(HealthWait(reason: reason, since: now.elapsed, retryAfter: finding.retryAfter), then: .rest)
            return .setThrottle(reason, detail: finding.detail)
        }
        guard let reason = finding.reason else {
            notes.append(.healthEnded(wait.reason, waited: now.elapsed - wait.since, resumed: true))
            state = .recordingThrottle(nil, then: .work)
            return .setThrottle(nil, detail: nil)
        }
        let next = HealthWait(reason: reason, since: wait.since, retryAfter: finding.retryAfter)
        guard reason == wait.reason else {
            notes.append(.healthWaiting(reason, detail: finding.detail))
            state = .recordingThrottle(next, then: .rest)
            return .setThrottle(reason, detail: finding.detail)
        }
        return rest(next.retryAfter, then: .healthRecheck(next))
    }

    /// The steps of a batch transaction.
    private mutating func transaction(_ step: Step, _ event: Event, at now: Now) -> Action {
        switch (step, event) {
        case (.claiming(let batch), .claimed(let claim)):
            guard let claim else {
                if case .part = batch { return close(then: .lost) }
                return close(then: .busy)
            }
            if let reason = StopReason(jobState: claim.jobState) { return close(then: .stop(reason)) }
            if claim.tuning != tuning, retune(claim.tuning) { return close(then: .retire) }
            preferred = claim.range
            switch batch {
            case .next(let size):
                let bySpan = density.bySpan && Self.integerKey(claim.lower) != nil
                state = .transaction(.bounding(claim, size: size, bySpan: bySpan))
                return .upperKey(claim, size: size, bySpan: bySpan)
            case .part(let range, let lower, let upper, let keys):
                // The part starts where the bisection stands; another worker that moved the range
                // meanwhile ends the bisection (its batches go on from the checkpoint).
                guard claim.range == range, claim.lower == lower else { return close(then: .lost) }
                let write = BatchWrite(claim: claim, upper: upper, keys: keys, size: keys, bound: .counted, single: keys == 1, attempt: attempt)
                guard keys == 1 else { return self.write(write) }
                state = .transaction(.checkingFirstKey(write))
                return .firstKey(claim, atMost: upper)
            }
        case (.bounding(let claim, let size, let bySpan), .upperKey(let found)):
            guard let found else {
                if bySpan {
                    density.emptySpan()
                    state = .transaction(.bounding(claim, size: size, bySpan: false))
                    return .upperKey(claim, size: size, bySpan: false)
                }
                state = .transaction(.completingRange(claim))
                return .completeRange(claim)
            }
            if found.bound == .span {
                density.spanned()
            } else if let start = Self.integerKey(claim.lower), let end = Self.integerKey(found.key) {
                density.counted(keys: found.walked, lower: start, upper: end)
            }
            if claim.lower == found.key {
                return close(then: .fail(RangeViolation(range: claim.range, lower: claim.lower, upper: found.key, keys: 0, rows: 0, outside: 0, stuck: true).failure))
            }
            return write(BatchWrite(claim: claim, upper: found.key, keys: found.walked, size: size, bound: found.bound, attempt: attempt))
        case (.completingRange, .done):
            preferred = nil
            state = .idle
            return next(at: now)
        case (.checkingFirstKey(let write), .firstKey(let first)):
            if let first, first != write.upper { return close(then: .firstKey(first)) }
            return self.write(write)
        case (.writing(let write), .written(let written, let after)):
            return committed(write, written, after: after, at: now)
        case (.quarantining(let write, let error), .quarantined(let badRows)):
            let limit = settings.spec.onError.maxRows
            guard badRows <= Int64(limit) else {
                return close(then: .fail(RunFailure(
                    sqlstate: error.code.raw, range: write.claim.range, afterKey: write.claim.lower, key: write.upper,
                    message: "more than on_error.max_rows (\(limit)) bad rows: \(error.message) (this row was not recorded and nothing after the checkpoint was committed; \(badRows - 1) bad rows are quarantined: `backfill bad-rows \(settings.spec.name)` lists them)",
                    detail: error.detail, hint: error.hint)))
            }
            state = .transaction(.committingQuarantine(write, error, badRows: badRows))
            return .commitQuarantine(write)
        case (.committingQuarantine(let write, let error, let badRows), .done):
            notes.append(.badRow(key: write.upper, error: error, range: write.claim.range, badRows: badRows))
            retries.succeeded()
            if case .bisecting(var bisection) = mode {
                _ = bisection.failed()
                mode = .bisecting(bisection)
            }
            state = .idle
            return next(at: now)
        default:
            return invalid(event)
        }
    }

    private mutating func write(_ write: BatchWrite) -> Action {
        state = .transaction(.writing(write))
        return .write(write)
    }

    /// A committed batch: the sizer learns, and the rest owed after it (the pause between
    /// batches, the live-traffic throttle, the rate budget) is decided.
    private mutating func committed(_ write: BatchWrite, _ written: Written, after: Duration, at now: Now) -> Action {
        if written.outside > 0 {
            let claim = write.claim
            return close(then: .fail(RangeViolation(range: claim.range, lower: claim.lower, upper: write.upper, keys: write.keys,
                                                    rows: written.rows, outside: written.outside).failure))
        }
        retries.succeeded()
        rowsDone += written.rows
        // A part of a bisection is no measure of a batch's cost.
        if case .bisecting(var bisection) = mode {
            bisection.written()
            mode = .bisecting(bisection)
        } else {
            sizer.record(keys: write.keys, durationMs: after.milliseconds)
        }
        owedRest = (.milliseconds(tuned.batch.pauseMs), false)
        var blocking: Note?
        if let limit = settings.blockingWait, written.waiters.count > 0, written.waiters.longestMs >= limit.milliseconds {
            // Live traffic waited on this batch's locks longer than allowed: halve the batch,
            // and rest (every worker of this process) so that the waiters get through.
            sizer.shrink(by: 0.5)
            let rest = max(after, .milliseconds(tuned.batch.targetMs))
            blocking = .blocking(waiters: written.waiters.count, longestWait: .milliseconds(written.waiters.longestMs), rest: rest, nextSize: sizer.size)
            owedRest = (max(owedRest.duration, rest), true)
        }
        notes.append(.committed(write, written, duration: after, nextSize: sizer.size))
        if let blocking { notes.append(blocking) }
        if tuned.throttle.maxRowsPerSecond > 0 {
            state = .consumingRate
            return .consumeRate(rows: written.rows, rowsPerSecond: tuned.throttle.maxRowsPerSecond)
        }
        return restOwed(at: now)
    }

    private mutating func restOwed(at now: Now) -> Action {
        let owed = owedRest
        owedRest = (.zero, false)
        if owed.duration > .zero { return rest(owed.duration, everyWorker: owed.everyWorker, then: .next) }
        state = .idle
        return next(at: now)
    }

    /// Takes the overrides a claim read (`backfill tune`); true when this worker is no longer
    /// wanted (its number is at or above the overridden worker count).
    private mutating func retune(_ new: Tuning?) -> Bool {
        tuning = new
        tuned = (new ?? Tuning()).applied(to: settings.spec)
        sizer.retarget(targetMs: tuned.batch.targetMs)
        let retiring = new?.workers.map { settings.index >= $0 } ?? false
        notes.append(.tuned(new, applied: tuned, retiring: retiring))
        return retiring
    }

    /// The transaction is rolled back: go on as decided.
    private mutating func closed(_ then: AfterClose, at now: Now, random: Double) -> Action {
        switch then {
        case .stop(let reason): return end(.stop(reason))
        case .retire: return end(.finish)
        case .fail(let failure): return end(.fail(failure))
        case .busy:
            state = .countingRanges
            return .openRanges
        case .lost:
            mode = .walking
        case .firstKey(let key):
            if case .bisecting(var bisection) = mode {
                bisection.found(first: key)
                mode = .bisecting(bisection)
            }
        case .failure(let failure):
            return judge(failure, at: now, random: random)
        case .badKey(let key, let data):
            return end(.fail(RunFailure(
                sqlstate: data.error.code.raw, range: data.range, afterKey: data.afterKey, key: key, attempts: attempt,
                message: data.error.message + " (on_error: stop; nothing after the checkpoint was committed; to write every other row and quarantine bad ones, set `on_error: {action: skip}`)",
                detail: data.error.detail, hint: data.error.hint)))
        }
        state = .idle
        return next(at: now)
    }

    /// The next step of the bad-key search.
    private mutating func searchStep(_ search: Bisection, _ data: DataError) -> Action {
        switch search.step {
        case .finished:
            return close(then: .badKey(nil, data))
        case .split(let lower, let upper, let offset):
            state = .searchingBadKey(search, data, .splitting)
            return .splitPoint(lower: lower, upper: upper, offset: offset)
        case .attempt(let lower, let upper, _):
            state = .searchingBadKey(search, data, .probing)
            return .probe(lower: lower, upper: upper)
        }
    }

    /// The single integer of a key (a dense integer key's span is arithmetic on it).
    static func integerKey(_ key: [String]?) -> Int64? {
        guard let key, key.count == 1 else { return nil }
        return Int64(key[0])
    }
}
