import PostgresClient

/// What a failed step leads to: a rollback first when a transaction is open, then a retry, a
/// reconnect, a bisection or bad-key search, a rest for live traffic, or the job's failure.
extension WorkerMachine {
    mutating func failed(_ error: PostgresError, after: Duration, watchdog: Duration?, at now: Now, random: Double) -> Action {
        var failure = Failure(error: error, duration: after, watchdogWaited: watchdog)
        switch state {
        case .connecting(let lost, _):
            return connectFailed(error, lost: lost, at: now, random: random)
        case .transaction(let step):
            (failure.range, failure.afterKey) = position(in: step)
            switch step {
            case .claiming, .bounding, .completingRange, .checkingFirstKey, .committingQuarantine:
                break
            case .writing(let write):
                failure.write = write
                // A part of one key failed with a data error under its savepoint: its row is
                // recorded and the checkpoint moved past it, in the same transaction.
                if write.single, Bisection.isolates(error), !Self.isRangeCheck(error) {
                    state = .transaction(.quarantining(write, error))
                    return .quarantine(write, error)
                }
            case .quarantining(let write, let original):
                return close(then: .fail(RunFailure(
                    sqlstate: original.code.raw, range: write.claim.range, afterKey: write.claim.lower, key: write.upper, attempts: attempt,
                    message: original.message + " (its row could not be quarantined: \(error.message))", detail: original.detail, hint: original.hint)))
            }
            return close(then: .failure(failure))
        case .findingSplit(let range, let lower):
            (failure.range, failure.afterKey) = (range, lower)
        case .searchingBadKey(let search, let data, let step):
            // A probe that fails with a data error is undone and the search goes on; any other
            // failure ends the search without a key.
            if step == .probing, Bisection.isolates(error) {
                state = .searchingBadKey(search, data, .undoing)
                return .undoProbe
            }
            return close(then: .badKey(nil, data))
        case .ended:
            return invalid(.failed(error, after: after, watchdogWaited: watchdog))
        default:
            break
        }
        return judge(failure, at: now, random: random)
    }

    /// A failure that is not the database's (a lost lease, a key that cannot be decoded): the
    /// worker fails, after rolling back the transaction it has open.
    mutating func unexpected(_ message: String) -> Action {
        switch state {
        case .transaction(let step):
            let (range, afterKey) = position(in: step)
            return close(then: .fail(RunFailure(range: range, afterKey: afterKey, message: message)))
        case .searchingBadKey: return close(then: .fail(RunFailure(range: preferred, message: message)))
        default: return end(.fail(RunFailure(message: message)))
        }
    }

    /// Where a batch transaction's failure happened: the claimed range and its checkpoint, or,
    /// before the claim, the range this worker prefers.
    private func position(in step: Step) -> (range: Int?, afterKey: [String]?) {
        switch step {
        case .claiming: (preferred, nil)
        case .bounding(let claim, _, _), .completingRange(let claim): (claim.range, claim.lower)
        case .checkingFirstKey(let write), .writing(let write), .quarantining(let write, _), .committingQuarantine(let write, _, _):
            (write.claim.range, write.claim.lower)
        }
    }

    /// A failure with no transaction open.
    mutating func judge(_ failure: Failure, at now: Now, random: Double) -> Action {
        let error = failure.error
        if Self.isRangeCheck(error) {
            var violation = RangeViolation(range: failure.range ?? 0, lower: failure.afterKey, upper: failure.write?.upper ?? [], keys: failure.write?.size ?? 0,
                                           rows: nil, outside: nil)
            if Self.isStillMatching(error) { violation.stillMatching = settings.spec }
            return end(.fail(violation.failure))
        }
        if error.code == .queryCanceled, let waited = failure.watchdogWaited, !now.stopRequested {
            // The watchdog cancelled the batch, which rolled back: halve it, and let every worker
            // rest so the waiters get through.
            sizer.halve()
            let rest = max(.milliseconds(tuned.batch.targetMs), settings.blockingWait ?? .zero)
            notes.append(.watchdog(waited: waited, rest: rest, nextSize: sizer.size))
            if let reason = stopReason(at: now) { return end(.stop(reason)) }
            return self.rest(rest, everyWorker: true, then: .next)
        }
        if let write = failure.write, Bisection.isolates(error) { return dataError(error, in: write, at: now) }
        // Nothing is retried blindly: every try starts again from the committed checkpoint, so
        // trying again after any failure never applies a batch twice.
        if now.stopRequested, error.code == .queryCanceled || error.isConnectionLost { return end(.stop(.signal)) }
        switch retries.failed(error, now: now.elapsed.seconds, random: random) {
        case .fail(var given):
            (given.range, given.afterKey) = (failure.range, failure.afterKey)
            return end(.fail(given))
        case .retry(let reason, let attempt, let delayMs, let halve, let reconnect):
            if halve { sizer.halve() }
            notes.append(.retry(reason: reason, attempt: attempt, delay: .milliseconds(delayMs), nextSize: sizer.size, error: error, after: failure.duration))
            if reconnect {
                state = .connecting(lost: LostConnection(range: failure.range, afterKey: failure.afterKey), slotWaitSince: nil)
                return .connect
            }
            return rest(.milliseconds(delayMs), then: .next)
        }
    }

    /// A batch statement failed with a data error: bisect it (`on_error: skip`) or search its
    /// first bad key and stop (`on_error: stop`).
    private mutating func dataError(_ error: PostgresError, in write: BatchWrite, at now: Now) -> Action {
        retries.succeeded()
        let claim = write.claim
        if case .bisecting(var bisection) = mode {
            // A part of the bisection failed as a whole: split it next.
            bisection.failed()
            mode = .bisecting(bisection)
            state = .idle
            return next(at: now)
        }
        // A page batch does not know how many rows it holds: the first split reads them all,
        // counting (its offset past the last row), and the search then halves rows, not pages.
        let search = Bisection(range: claim.range, lower: claim.lower, upper: write.upper, keys: write.bound == .pages ? Int(Int32.max) : write.keys)
        switch settings.spec.onError.action {
        case .stop:
            state = .searchingBadKey(search, DataError(error: error, range: claim.range, afterKey: claim.lower), .opening)
            return .beginProbe
        case .skip:
            mode = .bisecting(search)
            state = .idle
            return next(at: now)
        }
    }

    /// Connecting failed: the first connection fails the worker; a reconnect is tried again,
    /// with backoff, until `retry.reconnect_timeout_ms` after the connection was lost.
    mutating func connectFailed(_ error: PostgresError, lost: LostConnection?, at now: Now, random: Double) -> Action {
        guard let lost else {
            return end(.fail(RunFailure(sqlstate: error.code.raw, message: "worker \(settings.index) could not connect: \(error.message)", hint: error.hint)))
        }
        if let reason = stopReason(at: now) { return end(.stop(reason)) }
        switch retries.reconnectFailed(error, now: now.elapsed.seconds, random: random) {
        case .fail(var given):
            (given.range, given.afterKey) = (lost.range, lost.afterKey)
            return end(.fail(given))
        case .retry(let reason, let attempt, let delayMs, _, _):
            notes.append(.retry(reason: reason, attempt: attempt, delay: .milliseconds(delayMs), nextSize: sizer.size, error: error, after: .zero))
            return rest(.milliseconds(delayMs), then: .connect(lost: lost, slotWaitSince: nil))
        }
    }

    /// The checkpoint's check constraint refused a batch that changed rows outside its range, or
    /// (a physical walk) rows that still match `where`: never a bad row, always the job's end.
    static func isRangeCheck(_ error: PostgresError) -> Bool {
        error.code == "23514" && (error.message.contains("ranges_batch_within_range") || isStillMatching(error))
    }

    /// A physical walk's batch changed rows that still match `where` (`ranges_batch_leaves_where_false`).
    static func isStillMatching(_ error: PostgresError) -> Bool {
        error.code == "23514" && error.message.contains("ranges_batch_leaves_where_false")
    }
}

extension RangeViolation {
    var failure: RunFailure { RunFailure(range: range, afterKey: lower, message: description) }
}
