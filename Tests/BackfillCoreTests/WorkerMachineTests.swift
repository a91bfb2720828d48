@testable import BackfillCore
import PostgresClient
import Testing

/// Every transition of the worker's decisions, without a database or a real clock.
@Suite("Worker state machine")
struct WorkerMachineTests {
    func machine(_ yaml: String = "", maxRuntime: Double? = nil) throws -> WorkerMachine {
        let spec = try JobSpec.parse(yaml: "name: m\ntable: t\nkey: [id]\nset: {a: 1}\n" + yaml, file: "m.yaml")
        return WorkerMachine(settings: .init(spec: spec, maxRuntime: maxRuntime))
    }

    let noWaiters = Waiters(count: 0, longestMs: 0)
    func at(_ seconds: Double, stop: Bool = false, rest: Double = 0) -> WorkerMachine.Now {
        .init(seconds: seconds, stopRequested: stop, sharedRestMs: rest)
    }

    @Test("start: check health first, then run a batch of the first size; health is checked once a second")
    func start() throws {
        var m = try machine("batch: {size: 700}")
        #expect(m.handle(.ready, at: at(0)) == .checkHealth)
        #expect(m.handle(.healthy, at: at(0)) == .runBatch(size: 700))
        #expect(m.handle(.committed(rows: 700, keys: 700, ms: 50, waiters: noWaiters), at: at(0.1)) == .runBatch(size: 700))
        #expect(m.handle(.committed(rows: 700, keys: 700, ms: 50, waiters: noWaiters), at: at(1.2)) == .checkHealth)
    }

    @Test("the sizer learns from the keys walked, not the size asked for (the last batch of a range)")
    func keysWalked() throws {
        var m = try machine("batch: {size: 1000, max: 100000}")
        _ = m.handle(.healthy, at: at(0))
        // 10 keys in 50 ms is a slow rate: the next size must not grow as if 1,000 had been walked.
        _ = m.handle(.committed(rows: 10, keys: 10, ms: 50, waiters: noWaiters), at: at(0.1))
        #expect(m.sizer.size < 1000)
    }

    @Test("a stop request, the time box, pause and cancel stop the worker")
    func stops() throws {
        var m = try machine(maxRuntime: 10)
        #expect(m.handle(.ready, at: at(0, stop: true)) == .stop(.signal))
        #expect(m.handle(.ready, at: at(10)) == .stop(.timeBox))
        #expect(m.handle(.healthy, at: at(11)) == .stop(.timeBox))
        #expect(m.handle(.jobState(.paused), at: at(1)) == .stop(.paused))
        #expect(m.handle(.jobState(.cancelled), at: at(1)) == .stop(.cancelled))
    }

    @Test("range done: go on; every range busy: split, or finish when none is open; a failed split rests 100 ms")
    func ranges() throws {
        var m = try machine()
        _ = m.handle(.healthy, at: at(0))
        #expect(m.handle(.rangeDone, at: at(0.1)) == .runBatch(size: 1000))
        #expect(m.handle(.busy(openRanges: 0), at: at(0.2)) == .finish)
        #expect(m.handle(.busy(openRanges: 3), at: at(0.3)) == .split)
        #expect(m.handle(.split(false), at: at(0.4)) == .rest(ms: 100, everyWorker: false))
        #expect(m.handle(.split(true), at: at(0.5)) == .runBatch(size: 1000))
        #expect(m.handle(.busy(openRanges: 3), at: at(0.6, stop: true)) == .stop(.signal))
    }

    @Test("retryable errors back off with jitter and count attempts; a timeout halves; a permanent error fails with a typed failure")
    func retries() throws {
        var m = try machine("retry: {max_attempts: 3, backoff_ms: 100}")
        _ = m.handle(.healthy, at: at(0))
        let lock = PostgresError(code: .lockNotAvailable, message: "lock timeout")
        #expect(m.handle(.failed(lock, range: 2, afterKey: ["10"]), at: at(0.1), random: 0.5) == .rest(ms: 50, everyWorker: false))
        #expect(m.drainNotes() == [.retry(reason: .lockTimeout, attempt: 1, delayMs: 50, nextSize: 1000)])
        #expect(m.attempt == 2)
        let timeout = PostgresError(code: .queryCanceled, message: "statement timeout")
        #expect(m.handle(.failed(timeout, range: 2, afterKey: ["10"]), at: at(0.2), random: 1) == .rest(ms: 200, everyWorker: false))
        #expect(m.sizer.size == 500)
        guard case .fail(let failure) = m.handle(.failed(lock, range: 2, afterKey: ["10"]), at: at(0.3), random: 0) else {
            Issue.record("the third failure should give up")
            return
        }
        #expect(failure.exhausted && failure.attempts == 3 && failure.range == 2 && failure.afterKey == ["10"] && failure.sqlstate == "55P03")
        var fresh = try machine()
        let check = PostgresError(code: "23514", message: "violates check constraint", detail: "row (1)")
        #expect(fresh.handle(.failed(check, range: 0, afterKey: nil), at: at(0)) == .fail(RunFailure(
            sqlstate: "23514", range: 0, afterKey: nil, attempts: 1, exhausted: false, message: "violates check constraint", detail: "row (1)")))
    }

    @Test("on_error skip: a data error bisects the batch in key order, a retryable error repeats the step, then batches go on")
    func bisectsOnSkip() throws {
        var m = try machine("on_error: {action: skip}\nbatch: {size: 4, min: 1}")
        _ = m.handle(.healthy, at: at(0))
        let cast = PostgresError(code: "22P02", message: "invalid input syntax for type bigint")
        #expect(m.handle(.batchFailed(cast, range: 1, lower: ["10"], upper: ["14"], keys: 4), at: at(0.1))
                == .bisect(range: 1, step: .split(lower: ["10"], upper: ["14"], offset: 1)))
        #expect(m.handle(.splitFound(key: ["12"], walked: 2), at: at(0.2)) == .bisect(range: 1, step: .attempt(lower: ["10"], upper: ["12"], keys: 2)))
        // A lock timeout on a part: back off, then the same part again.
        #expect(m.handle(.failed(PostgresError(code: .lockNotAvailable, message: "lock"), range: 1, afterKey: ["10"]), at: at(0.3), random: 0)
                == .rest(ms: 0, everyWorker: false))
        #expect(m.handle(.ready, at: at(0.4)) == .bisect(range: 1, step: .attempt(lower: ["10"], upper: ["12"], keys: 2)))
        // The first half committed (parts do not feed the sizer); the second fails as a whole and splits.
        #expect(m.handle(.committed(rows: 2, keys: 2, ms: 1, waiters: noWaiters), at: at(0.5)) == .bisect(range: 1, step: .attempt(lower: ["12"], upper: ["14"], keys: 2)))
        #expect(m.sizer.size == 4)
        #expect(m.handle(.batchFailed(cast, range: 1, lower: ["12"], upper: ["14"], keys: 2), at: at(0.6)) == .bisect(range: 1, step: .split(lower: ["12"], upper: ["14"], offset: 0)))
        #expect(m.handle(.splitFound(key: ["13"], walked: 1), at: at(0.7)) == .bisect(range: 1, step: .attempt(lower: ["12"], upper: ["13"], keys: 1)))
        #expect(m.handle(.quarantined, at: at(0.8)) == .bisect(range: 1, step: .attempt(lower: ["13"], upper: ["14"], keys: 1)))
        #expect(m.handle(.committed(rows: 1, keys: 1, ms: 1, waiters: noWaiters), at: at(0.9)) == .runBatch(size: 4))
        #expect(m.bisection == nil)
    }

    @Test("on_error skip: another worker moving the range ends the bisection; a single key failing outside its savepoint stops the job")
    func bisectionEnds() throws {
        var m = try machine("on_error: {action: skip}")
        _ = m.handle(.healthy, at: at(0))
        let unique = PostgresError(code: .uniqueViolation, message: "duplicate key")
        _ = m.handle(.batchFailed(unique, range: 0, lower: nil, upper: ["9"], keys: 9), at: at(0.1))
        #expect(m.handle(.bisectionLost, at: at(0.2)) == .runBatch(size: 1000))
        #expect(m.handle(.batchFailed(unique, range: 0, lower: ["8"], upper: ["9"], keys: 1), at: at(0.3)) == .bisect(range: 0, step: .attempt(lower: ["8"], upper: ["9"], keys: 1)))
        guard case .fail(let failure) = m.handle(.batchFailed(unique, range: 0, lower: ["8"], upper: ["9"], keys: 1), at: at(0.4)) else {
            Issue.record("a single key failing outside its savepoint must stop the job")
            return
        }
        #expect(failure.key == ["9"] && failure.sqlstate == "23505")
    }

    @Test("on_error stop (the default): a data error looks for the first bad key, then fails naming it; other errors fail as before")
    func stopNamesKey() throws {
        var m = try machine()
        _ = m.handle(.healthy, at: at(0))
        let cast = PostgresError(code: "22P02", message: "invalid input syntax")
        #expect(m.handle(.batchFailed(cast, range: 2, lower: ["100"], upper: ["200"], keys: 100), at: at(0.1))
                == .findBadKey(Bisection(range: 2, lower: ["100"], upper: ["200"], keys: 100)))
        guard case .fail(let failure) = m.handle(.badKeyFound(["150"]), at: at(0.2)) else {
            Issue.record("the job must stop")
            return
        }
        #expect(failure.key == ["150"] && failure.range == 2 && failure.afterKey == ["100"] && failure.sqlstate == "22P02")
        #expect(failure.description.contains("failed at key (150): SQLSTATE 22P02 invalid input syntax"))
        var other = try machine()
        guard case .fail(let syntax) = other.handle(.batchFailed(PostgresError(code: .syntaxError, message: "syntax"), range: 0, lower: nil, upper: ["5"], keys: 5), at: at(0)) else {
            Issue.record("a syntax error must fail at once")
            return
        }
        #expect(syntax.key == nil && syntax.sqlstate == "42601")
    }

    @Test("a committed batch resets the attempt count")
    func attemptResets() throws {
        var m = try machine()
        _ = m.handle(.failed(PostgresError(code: .deadlockDetected, message: "deadlock"), range: 0, afterKey: nil), at: at(0), random: 0)
        #expect(m.attempt == 2)
        _ = m.handle(.committed(rows: 1, keys: 1000, ms: 50, waiters: noWaiters), at: at(0.1))
        #expect(m.attempt == 1)
    }

    @Test("a cancelled statement after a stop request is a stop, not a retry")
    func cancelledByStop() throws {
        var m = try machine()
        let cancelled = PostgresError(code: .queryCanceled, message: "canceling statement due to user request")
        #expect(m.handle(.failed(cancelled, range: 0, afterKey: nil), at: at(1, stop: true)) == .stop(.signal))
    }

    @Test("a lost connection reconnects; failures to reconnect back off until retry.reconnect_timeout_ms, then fail")
    func reconnect() throws {
        var m = try machine("retry: {reconnect_timeout_ms: 5000, max_attempts: 100}")
        let lost = PostgresError(code: .connectionFailure, message: "server closed the connection")
        #expect(m.handle(.failed(lost, range: 1, afterKey: ["5"]), at: at(0), random: 0) == .reconnect)
        let refused = PostgresError(code: .sqlclientUnableToEstablishSqlconnection, message: "connection refused")
        guard case .rest = m.handle(.reconnectFailed(refused), at: at(1), random: 0) else { Issue.record("should back off"); return }
        #expect(m.handle(.ready, at: at(1.5)) == .reconnect)
        guard case .fail(let failure) = m.handle(.reconnectFailed(refused), at: at(6), random: 0) else { Issue.record("should give up"); return }
        #expect(failure.message.contains("could not reconnect within 5000 ms") && failure.range == 1)
        var back = try machine()
        _ = back.handle(.failed(lost, range: 0, afterKey: nil), at: at(0), random: 0)
        #expect(back.handle(.reconnected, at: at(0.5)) == .checkHealth)
    }

    @Test("live traffic that waited longer than blocking_wait_ms: halve, and rest every worker at least target_ms")
    func blocking() throws {
        var m = try machine("batch: {size: 4000, max: 10000}\nthrottle: {blocking_wait_ms: 30}")
        _ = m.handle(.healthy, at: at(0))
        let short = Waiters(count: 1, longestMs: 10)
        #expect(m.handle(.committed(rows: 4000, keys: 4000, ms: 40, waiters: short), at: at(0.1)) == .runBatch(size: 5000))
        let long = Waiters(count: 2, longestMs: 35)
        #expect(m.handle(.committed(rows: 5000, keys: 5000, ms: 40, waiters: long), at: at(0.2)) == .rest(ms: 50, everyWorker: true))
        #expect(m.drainNotes() == [.blocking(waiters: 2, longestWaitMs: 35, restMs: 50, nextSize: m.sizer.size)])
        #expect(m.sizer.size < 5000)
        var off = try machine("throttle: {when_blocking: false}")
        _ = off.handle(.healthy, at: at(0))
        #expect(off.handle(.committed(rows: 1, keys: 1000, ms: 50, waiters: long), at: at(0.1)) == .runBatch(size: 1000))
    }

    @Test("the rate budget is asked after each batch; its wait, pause_ms and another worker's rest are kept")
    func rests() throws {
        var m = try machine("batch: {pause_ms: 20}\nthrottle: {max_rows_per_second: 1000}")
        _ = m.handle(.healthy, at: at(0))
        #expect(m.handle(.committed(rows: 1000, keys: 1000, ms: 50, waiters: noWaiters), at: at(0.1)) == .consumeRate(rows: 1000))
        #expect(m.handle(.rateWait(seconds: 0.5), at: at(0.1)) == .rest(ms: 500, everyWorker: false))
        #expect(m.drainNotes() == [.rateLimited(waitMs: 500)])
        #expect(m.handle(.committed(rows: 10, keys: 1000, ms: 50, waiters: noWaiters), at: at(0.7)) == .consumeRate(rows: 10))
        #expect(m.handle(.rateWait(seconds: 0), at: at(0.7)) == .rest(ms: 20, everyWorker: false))
        #expect(m.handle(.ready, at: at(0.75, rest: 30)) == .rest(ms: 30, everyWorker: false))
    }

    @Test("the watchdog cancelled a batch that live traffic waited on: halve, rest every worker, no retry counted")
    func watchdog() throws {
        var m = try machine("batch: {size: 4000, target_ms: 50}\nthrottle: {blocking_wait_ms: 80}")
        _ = m.handle(.healthy, at: at(0))
        #expect(m.handle(.cancelledForWaiters(waitedMs: 85), at: at(0.1)) == .rest(ms: 80, everyWorker: true))
        #expect(m.sizer.size == 2000)
        #expect(m.attempt == 1)
        #expect(m.drainNotes() == [.watchdog(waitedMs: 85, restMs: 80, nextSize: 2000)])
        #expect(m.handle(.cancelledForWaiters(waitedMs: 90), at: at(0.2, stop: true)) == .stop(.signal))
    }
}
