@testable import BackfillCore
import PostgresClient
import Testing

/// Every transition of the worker's decisions, without a database or a real clock. The machine
/// starts in the state a test needs (its test initialiser) and is driven step by step.
@Suite("Worker state machine")
struct WorkerMachineTests {
    func machine(_ yaml: String = "", index: Int = 0, maxRuntime: Double? = nil,
                 state: WorkerMachine.State = .idle, mode: WorkerMachine.Mode = .walking) throws -> WorkerMachine {
        let spec = try JobSpec.parse(yaml: "name: m\ntable: t\nkey: [id]\nset: {a: 1}\n" + yaml, file: "m.yaml")
        var m = WorkerMachine(settings: .init(spec: spec, index: index, maxRuntime: maxRuntime.map { .milliseconds(Int64($0 * 1000)) }), state: state, mode: mode)
        // Health checked and the heartbeat recorded at 0 s (`start` begins afresh).
        m.lastHealthCheck = .zero
        m.lastHeartbeat = .zero
        return m
    }

    func at(_ seconds: Double, stop: Bool = false, rest: Double = 0) -> WorkerMachine.Now {
        .init(elapsed: .milliseconds(Int64(seconds * 1000)), stopRequested: stop, sharedRest: .milliseconds(Int64(rest * 1000)))
    }

    func claim(_ range: Int = 0, after lower: [String]? = nil, state: JobState = .running, tuning: Tuning? = nil) -> RangeClaim {
        RangeClaim(range: range, lower: lower, ceiling: nil, jobState: state, tuning: tuning)
    }

    func upper(_ key: Int, _ walked: Int) -> UpperKey { UpperKey(key: [String(key)], walked: walked, bound: .counted) }

    /// Claims range 0, finds `walked` keys up to `key` and commits them in `ms`: returns what
    /// comes after the batch.
    func batch(_ m: inout WorkerMachine, after lower: [String]? = nil, to key: Int, walked: Int, ms: Double,
               waiters: Waiters = Waiters(count: 0, longestMs: 0), at now: WorkerMachine.Now) -> WorkerMachine.Action {
        let c = claim(after: lower)
        guard case .claim = m.handle(.done, at: now) else { return .fail(RunFailure(message: "no claim after the heartbeat")) }
        guard case .upperKey(_, let size, _) = m.handle(.claimed(c), at: now) else { return .fail(RunFailure(message: "no upper key")) }
        guard case .write(let w) = m.handle(.upperKey(upper(key, walked)), at: now) else { return .fail(RunFailure(message: "no write")) }
        #expect(w.size == size)
        return m.handle(.written(Written(rows: Int64(walked), waiters: waiters), after: .milliseconds(Int64(ms))), at: now)
    }

    let lock = PostgresError(code: .lockNotAvailable, message: "lock timeout")

    @Test("connect, check health, beat the heart, claim with the first size; health once a second, the heartbeat every 2 s")
    func start() throws {
        var m = try machine("batch: {size: 700}", state: .ended)
        (m.lastHealthCheck, m.lastHeartbeat) = (nil, nil)
        #expect(m.start() == .connect)
        #expect(m.handle(.connected(origin: "backfill_m"), at: at(0)) == .readHealth(slow: true))
        #expect(m.drainNotes() == [.origin("backfill_m")])
        #expect(m.handle(.health(HealthReading()), at: at(0)) == .heartbeat(range: nil, rowsDone: 0))
        #expect(m.handle(.done, at: at(0)) == .claim(preferring: nil))
        #expect(m.handle(.claimed(claim(3)), at: at(0)) == .upperKey(claim(3), size: 700, bySpan: false))
        guard case .write = m.handle(.upperKey(upper(700, 700)), at: at(0)) else { Issue.record("a write"); return }
        #expect(m.handle(.written(Written(rows: 700), after: .milliseconds(50)), at: at(0.1)) == .claim(preferring: 3))
        #expect(m.rowsDone == 700)
    }

    @Test("an event that cannot happen in the machine's state is a programmer error: the worker fails naming both")
    func invalidTransition() throws {
        var m = try machine()
        guard case .fail(let failure) = m.handle(.splitPoint(key: ["5"], walked: 1), at: at(0)) else { Issue.record("must fail"); return }
        #expect(failure.message.contains("internal error") && failure.message.contains("splitPoint") && failure.message.contains("idle"))
        var searching = try machine(state: .searchingBadKey(Bisection(range: 0, lower: nil, upper: ["9"], keys: 9),
                                                            .init(error: lock, range: 0, afterKey: nil), .probing))
        guard case .fail = searching.handle(.quarantined(badRows: 1), at: at(0)) else { Issue.record("must fail"); return }
        #expect(searching.state == .ended)
    }

    @Test("the sizer learns from the keys walked, not the size asked for (the last batch of a range)")
    func keysWalked() throws {
        var m = try machine("batch: {size: 1000, max: 100000}", state: .heartbeating)
        // 10 keys in 50 ms is a slow rate: the next size must not grow as if 1,000 had been walked.
        _ = batch(&m, to: 10, walked: 10, ms: 50, at: at(0.1))
        #expect(m.sizer.size < 1000)
    }

    @Test("a stop request, the time box, pause and cancel stop the worker; pause and cancel roll the claim back first")
    func stops() throws {
        var m = try machine(maxRuntime: 10)
        #expect(m.next(at: at(0, stop: true)) == .stop(.signal))
        var boxed = try machine(maxRuntime: 10)
        #expect(boxed.next(at: at(10)) == .stop(.timeBox))
        for (state, reason) in [(JobState.paused, StopReason.paused), (.cancelled, .cancelled)] {
            var claiming = try machine(state: .transaction(.claiming(.next(size: 1000))))
            #expect(claiming.handle(.claimed(claim(state: state)), at: at(1)) == .rollback)
            #expect(claiming.handle(.done, at: at(1)) == .stop(reason))
        }
    }

    @Test("range done: complete it and go on; every range busy: split, or finish when none is open; a failed split rests 100 ms")
    func ranges() throws {
        var m = try machine(state: .transaction(.bounding(claim(2, after: ["9"]), size: 1000, bySpan: false)))
        #expect(m.handle(.upperKey(nil), at: at(0.1)) == .completeRange(claim(2, after: ["9"])))
        #expect(m.handle(.done, at: at(0.1)) == .claim(preferring: nil))
        var busy = try machine(state: .transaction(.claiming(.next(size: 1000))))
        #expect(busy.handle(.claimed(nil), at: at(0.2)) == .rollback)
        #expect(busy.handle(.done, at: at(0.2)) == .openRanges)
        #expect(busy.handle(.openRanges(3), at: at(0.3)) == .split(minimumRows: 1000))
        #expect(busy.handle(.split(false), at: at(0.4)) == .rest(.milliseconds(100), everyWorker: false))
        var none = try machine(state: .countingRanges)
        #expect(none.handle(.openRanges(0), at: at(0.3)) == .finish)
        var stopping = try machine(state: .countingRanges)
        #expect(stopping.handle(.openRanges(3), at: at(0.6, stop: true)) == .stop(.signal))
    }

    @Test("retryable errors roll back, back off with jitter and count attempts; a timeout halves; a permanent error fails with a typed failure")
    func retries() throws {
        let writing = WorkerMachine.State.transaction(.bounding(claim(2, after: ["10"]), size: 1000, bySpan: false))
        var m = try machine("retry: {max_attempts: 3, backoff_ms: 100}", state: writing)
        #expect(m.handle(.failed(lock, after: .milliseconds(7), watchdogWaited: nil), at: at(0.1), random: 0.5) == .rollback)
        #expect(m.handle(.done, at: at(0.1), random: 0.5) == .rest(.milliseconds(50), everyWorker: false))
        #expect(m.drainNotes() == [.retry(reason: .lockTimeout, attempt: 1, delay: .milliseconds(50), nextSize: 1000, error: lock, after: .milliseconds(7))])
        #expect(m.attempt == 2)
        let timeout = PostgresError(code: .queryCanceled, message: "statement timeout")
        var second = m
        second.state = writing
        _ = second.handle(.failed(timeout, after: .zero, watchdogWaited: nil), at: at(0.2), random: 1)
        #expect(second.handle(.done, at: at(0.2), random: 1) == .rest(.milliseconds(200), everyWorker: false))
        #expect(second.sizer.size == 500)
        second.state = writing
        _ = second.handle(.failed(lock, after: .zero, watchdogWaited: nil), at: at(0.3), random: 0)
        guard case .fail(let failure) = second.handle(.done, at: at(0.3), random: 0) else { Issue.record("the third failure should give up"); return }
        #expect(failure.exhausted && failure.attempts == 3 && failure.range == 2 && failure.afterKey == ["10"] && failure.sqlstate == "55P03")
        var fresh = try machine(state: .consumingRate)
        let check = PostgresError(code: "23514", message: "violates check constraint", detail: "row (1)")
        #expect(fresh.handle(.failed(check, after: .zero, watchdogWaited: nil), at: at(0)) == .fail(RunFailure(
            sqlstate: "23514", attempts: 1, exhausted: false, message: "violates check constraint", detail: "row (1)")))
    }

    @Test("on_error skip: a data error bisects the batch in key order, a retryable error repeats the step, then batches go on")
    func bisectsOnSkip() throws {
        let cast = PostgresError(code: "22P02", message: "invalid input syntax for type bigint")
        let c = claim(1, after: ["10"])
        var m = try machine("on_error: {action: skip}\nbatch: {size: 4, min: 1}",
                            state: .transaction(.writing(BatchWrite(claim: c, upper: ["14"], keys: 4, size: 4, bound: .counted))))
        m.lastHealthCheck = .zero
        #expect(m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.1)) == .rollback)
        #expect(m.handle(.done, at: at(0.1)) == .splitPoint(lower: ["10"], upper: ["14"], offset: 1))
        #expect(m.handle(.splitPoint(key: ["12"], walked: 2), at: at(0.2)) == .claim(preferring: 1))
        // The part claims its range where the bisection stands, and is written as it is.
        guard case .write(let half) = m.handle(.claimed(c), at: at(0.2)) else { Issue.record("the first half"); return }
        #expect(half.upper == ["12"] && half.keys == 2 && !half.single)
        // A lock timeout on a part: back off, then the same part again.
        _ = m.handle(.failed(lock, after: .zero, watchdogWaited: nil), at: at(0.3), random: 0)
        #expect(m.handle(.done, at: at(0.3), random: 0) == .rest(.zero, everyWorker: false))
        #expect(m.handle(.done, at: at(0.4)) == .claim(preferring: 1))
        guard case .write(let again) = m.handle(.claimed(c), at: at(0.4)) else { Issue.record("the same part again"); return }
        #expect(again.upper == half.upper && again.keys == half.keys && again.attempt == 2)
        // The first half committed (parts do not feed the sizer); the second fails as a whole and splits.
        #expect(m.handle(.written(Written(rows: 2), after: .milliseconds(1)), at: at(0.5)) == .claim(preferring: 1))
        #expect(m.sizer.size == 4)
        let rest = claim(1, after: ["12"])
        guard case .write(let second) = m.handle(.claimed(rest), at: at(0.5)) else { Issue.record("the second half"); return }
        _ = m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.6))
        #expect(m.handle(.done, at: at(0.6)) == .splitPoint(lower: ["12"], upper: ["14"], offset: 0))
        #expect(second.upper == ["14"])
        #expect(m.handle(.splitPoint(key: ["13"], walked: 1), at: at(0.7)) == .claim(preferring: 1))
        // A part of one key checks its first key, is written under a savepoint, and is quarantined.
        #expect(m.handle(.claimed(rest), at: at(0.7)) == .firstKey(rest, atMost: ["13"]))
        guard case .write(let one) = m.handle(.firstKey(["13"]), at: at(0.7)) else { Issue.record("the part of one key"); return }
        #expect(one.single)
        #expect(m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.8)) == .quarantine(one, cast))
        #expect(m.handle(.quarantined(badRows: 1), at: at(0.8)) == .commitQuarantine(one))
        #expect(m.handle(.done, at: at(0.8)) == .claim(preferring: 1))
        #expect(m.drainNotes().contains(.badRow(key: ["13"], error: cast, range: 1, badRows: 1)))
        let last = claim(1, after: ["13"])
        _ = m.handle(.claimed(last), at: at(0.9))
        guard case .write = m.handle(.firstKey(["14"]), at: at(0.9)) else { Issue.record("the last key"); return }
        #expect(m.handle(.written(Written(rows: 1), after: .milliseconds(1)), at: at(0.9)) == .claim(preferring: 1))
        #expect(m.mode == .walking)
    }

    @Test("on_error skip: another worker moving the range ends the bisection; a row inserted before a single key is split again")
    func bisectionEnds() throws {
        let bisection = Bisection(range: 0, lower: nil, upper: ["9"], keys: 9)
        var m = try machine("on_error: {action: skip}", state: .transaction(.claiming(.part(range: 0, lower: nil, upper: ["5"], keys: 5))), mode: .bisecting(bisection))
        m.lastHealthCheck = .zero
        #expect(m.handle(.claimed(claim(0, after: ["3"])), at: at(0.2)) == .rollback)
        #expect(m.handle(.done, at: at(0.2)) == .claim(preferring: 0))
        #expect(m.mode == .walking)
        var single = try machine("on_error: {action: skip}", state: .transaction(.claiming(.part(range: 0, lower: ["8"], upper: ["9"], keys: 1))), mode: .bisecting(bisection))
        #expect(single.handle(.claimed(claim(0, after: ["8"])), at: at(0.3)) == .firstKey(claim(0, after: ["8"]), atMost: ["9"]))
        #expect(single.handle(.firstKey(["8.5"]), at: at(0.3)) == .rollback)
    }

    @Test("on_error stop (the default): a data error searches the first bad key in a rolled-back transaction, then fails naming it")
    func stopNamesKey() throws {
        let cast = PostgresError(code: "22P02", message: "invalid input syntax")
        let c = claim(2, after: ["100"])
        var m = try machine(state: .transaction(.writing(BatchWrite(claim: c, upper: ["200"], keys: 100, size: 100, bound: .counted))))
        #expect(m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.1)) == .rollback)
        #expect(m.handle(.done, at: at(0.1)) == .beginProbe)
        #expect(m.handle(.done, at: at(0.1)) == .splitPoint(lower: ["100"], upper: ["200"], offset: 49))
        #expect(m.handle(.splitPoint(key: ["150"], walked: 50), at: at(0.1)) == .probe(lower: ["100"], upper: ["150"]))
        #expect(m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.1)) == .undoProbe)
        var action = m.handle(.done, at: at(0.1))
        // Halve down to the one failing key: key 150 of 100...150, say every probe fails.
        var steps = 0
        while action != .rollback, steps < 40 {
            steps += 1
            switch action {
            case .splitPoint(_, _, let offset): action = m.handle(.splitPoint(key: [String(150 - offset)], walked: offset + 1), at: at(0.2))
            case .probe: action = m.handle(.failed(cast, after: .zero, watchdogWaited: nil), at: at(0.2))
            case .undoProbe: action = m.handle(.done, at: at(0.2))
            default: action = m.handle(.done, at: at(0.2))
            }
        }
        #expect(action == .rollback)
        guard case .fail(let failure) = m.handle(.done, at: at(0.3)) else { Issue.record("the job must stop"); return }
        #expect(failure.key != nil && failure.range == 2 && failure.afterKey == ["100"] && failure.sqlstate == "22P02")
        #expect(failure.description.contains("on_error: stop"))
        var other = try machine(state: .transaction(.writing(BatchWrite(claim: claim(), upper: ["5"], keys: 5, size: 5, bound: .counted))))
        _ = other.handle(.failed(PostgresError(code: .syntaxError, message: "syntax"), after: .zero, watchdogWaited: nil), at: at(0))
        guard case .fail(let syntax) = other.handle(.done, at: at(0)) else { Issue.record("a syntax error must fail at once"); return }
        #expect(syntax.key == nil && syntax.sqlstate == "42601")
    }

    @Test("a cancelled statement after a stop request is a stop, not a retry")
    func cancelledByStop() throws {
        var m = try machine(state: .consumingRate)
        let cancelled = PostgresError(code: .queryCanceled, message: "canceling statement due to user request")
        #expect(m.handle(.failed(cancelled, after: .zero, watchdogWaited: nil), at: at(1, stop: true)) == .stop(.signal))
    }

    @Test("a lost connection reconnects; failures to reconnect back off until retry.reconnect_timeout_ms, then fail")
    func reconnect() throws {
        var m = try machine("retry: {reconnect_timeout_ms: 5000, max_attempts: 100}", state: .transaction(.bounding(claim(1, after: ["5"]), size: 10, bySpan: false)))
        let lost = PostgresError(code: .connectionFailure, message: "server closed the connection")
        #expect(m.handle(.failed(lost, after: .zero, watchdogWaited: nil), at: at(0), random: 0) == .rollback)
        #expect(m.handle(.done, at: at(0), random: 0) == .connect)
        let refused = PostgresError(code: .sqlclientUnableToEstablishSqlconnection, message: "connection refused")
        guard case .rest = m.handle(.failed(refused, after: .zero, watchdogWaited: nil), at: at(1), random: 0) else { Issue.record("should back off"); return }
        #expect(m.handle(.done, at: at(1.5)) == .connect)
        guard case .fail(let failure) = m.handle(.failed(refused, after: .zero, watchdogWaited: nil), at: at(6), random: 0) else { Issue.record("should give up"); return }
        #expect(failure.message.contains("could not reconnect within 5000 ms") && failure.range == 1 && failure.afterKey == ["5"])
        var back = try machine(state: .connecting(lost: .init(), slotWaitSince: nil))
        #expect(back.handle(.connected(origin: nil), at: at(1.5)) == .readHealth(slow: true))
    }

    @Test("live traffic that waited longer than blocking_wait_ms: halve, and rest every worker at least target_ms")
    func blocking() throws {
        var m = try machine("batch: {size: 4000, max: 10000}\nthrottle: {blocking_wait_ms: 30}", state: .heartbeating)
        m.lastHealthCheck = .zero
        #expect(batch(&m, to: 4000, walked: 4000, ms: 40, waiters: Waiters(count: 1, longestMs: 10), at: at(0.1)) == .claim(preferring: 0))
        m.state = .heartbeating
        let long = Waiters(count: 2, longestMs: 35)
        #expect(batch(&m, to: 9000, walked: 5000, ms: 40, waiters: long, at: at(0.2)) == .rest(.milliseconds(50), everyWorker: true))
        let notes = m.drainNotes()
        #expect(notes.last == .blocking(waiters: 2, longestWait: .milliseconds(35), rest: .milliseconds(50), nextSize: m.sizer.size))
        #expect(m.sizer.size < 5000)
        var off = try machine("throttle: {when_blocking: false}", state: .heartbeating)
        off.lastHealthCheck = .zero
        #expect(batch(&off, to: 1000, walked: 1000, ms: 50, waiters: long, at: at(0.1)) == .claim(preferring: 0))
    }

    @Test("the rate budget is asked after each batch; its wait, pause_ms and another worker's rest are kept; tuning changes them live")
    func rests() throws {
        var m = try machine("batch: {pause_ms: 20}\nthrottle: {max_rows_per_second: 1000}", state: .heartbeating)
        m.lastHealthCheck = .zero
        #expect(batch(&m, to: 1000, walked: 1000, ms: 50, at: at(0.1)) == .consumeRate(rows: 1000, rowsPerSecond: 1000))
        #expect(m.handle(.rateWait(.milliseconds(500)), at: at(0.1)) == .rest(.milliseconds(500), everyWorker: false))
        #expect(m.drainNotes().last == .rateLimited(wait: .milliseconds(500)))
        #expect(m.handle(.done, at: at(0.6)) == .claim(preferring: 0))
        // A claim that reads new overrides (`backfill tune`): no rate, a 30 ms pause, a 25 ms target.
        let tuning = Tuning(maxRowsPerSecond: 0, targetMs: 25, pauseMs: 30)
        guard case .upperKey = m.handle(.claimed(claim(tuning: tuning)), at: at(0.6)) else { Issue.record("an upper key"); return }
        #expect(m.sizer.size == 500, "the measured rate (20 keys/ms) × the new target, from the next batch on")
        #expect(m.drainNotes().contains(.tuned(tuning, applied: m.tuned, retiring: false)))
        _ = m.handle(.upperKey(upper(1500, 500)), at: at(0.6))
        #expect(m.handle(.written(Written(rows: 500), after: .milliseconds(25)), at: at(0.7)) == .rest(.milliseconds(30), everyWorker: false))
        #expect(m.handle(.done, at: at(0.75, rest: 0.03)) == .rest(.milliseconds(30), everyWorker: false))
    }

    @Test("tune --workers below this worker's number retires it: the claim is rolled back and the worker finishes")
    func retires() throws {
        var m = try machine(index: 2, state: .transaction(.claiming(.next(size: 1000))))
        #expect(m.handle(.claimed(claim(tuning: Tuning(workers: 2))), at: at(0)) == .rollback)
        #expect(m.handle(.done, at: at(0)) == .finish)
        var kept = try machine(index: 1, state: .transaction(.claiming(.next(size: 1000))))
        guard case .upperKey = kept.handle(.claimed(claim(tuning: Tuning(workers: 2))), at: at(0)) else { Issue.record("worker 1 of 2 goes on"); return }
    }

    @Test("the watchdog cancelled a batch that live traffic waited on: roll back, halve, rest every worker, no retry counted")
    func watchdog() throws {
        let write = BatchWrite(claim: claim(), upper: ["4000"], keys: 4000, size: 4000, bound: .counted)
        var m = try machine("batch: {size: 4000, target_ms: 50}\nthrottle: {blocking_wait_ms: 80}", state: .transaction(.writing(write)))
        let cancelled = PostgresError(code: .queryCanceled, message: "canceling statement due to user request")
        #expect(m.handle(.failed(cancelled, after: .zero, watchdogWaited: .milliseconds(85)), at: at(0.1)) == .rollback)
        #expect(m.handle(.done, at: at(0.1)) == .rest(.milliseconds(80), everyWorker: true))
        #expect(m.sizer.size == 2000 && m.attempt == 1)
        #expect(m.drainNotes() == [.watchdog(waited: .milliseconds(85), rest: .milliseconds(80), nextSize: 2000)])
        m.state = .transaction(.writing(write))
        _ = m.handle(.failed(cancelled, after: .zero, watchdogWaited: .milliseconds(90)), at: at(0.2, stop: true))
        #expect(m.handle(.done, at: at(0.2, stop: true)) == .stop(.signal))
    }

    @Test("a dense integer key is bounded by span while the density holds; an empty span counts instead")
    func span() throws {
        var m = try machine(state: .transaction(.claiming(.next(size: 100))))
        m.density.counted(keys: 100, lower: 0, upper: 100)
        #expect(m.handle(.claimed(claim(after: ["100"])), at: at(0)) == .upperKey(claim(after: ["100"]), size: 100, bySpan: true))
        #expect(m.handle(.upperKey(nil), at: at(0)) == .upperKey(claim(after: ["100"]), size: 100, bySpan: false))
        guard case .write(let w) = m.handle(.upperKey(upper(5000, 100)), at: at(0)) else { Issue.record("a write"); return }
        #expect(w.bound == .counted && !m.density.bySpan)
        var text = try machine(state: .transaction(.claiming(.next(size: 100))))
        text.density.counted(keys: 100, lower: 0, upper: 100)
        #expect(text.handle(.claimed(claim(after: ["a"])), at: at(0)) == .upperKey(claim(after: ["a"]), size: 100, bySpan: false))
    }

    @Test("a health wait: recorded, rechecked after its interval with the job's state, ended when healthy; a stop ends it without clearing")
    func healthWait() throws {
        var m = try machine(state: .checkingHealth(nil))
        let lag = HealthReading(slow: .init(replicas: .init(lagMs: 12_500)))
        let detail = "replica replay lag 12500 ms > 10000 ms"
        #expect(m.handle(.health(lag), at: at(0)) == .setThrottle(.replicationLag, detail: detail))
        #expect(m.handle(.done, at: at(0)) == .rest(.seconds(1), everyWorker: false))
        #expect(m.handle(.done, at: at(1)) == .readJobState)
        #expect(m.handle(.jobState(.running), at: at(1)) == .readHealth(slow: true))
        #expect(m.handle(.health(lag), at: at(1)) == .rest(.seconds(1), everyWorker: false))
        #expect(m.handle(.done, at: at(2)) == .readJobState)
        #expect(m.handle(.jobState(.running), at: at(2)) == .readHealth(slow: true))
        #expect(m.handle(.health(HealthReading(slow: .init())), at: at(2)) == .setThrottle(nil, detail: nil))
        #expect(m.handle(.done, at: at(2)) == .heartbeat(range: nil, rowsDone: 0), "2 s since the last heartbeat")
        #expect(m.drainNotes() == [.healthWaiting(.replicationLag, detail: detail), .healthEnded(.replicationLag, waited: .seconds(2), resumed: true)])
        var stopped = try machine(state: .resting(then: .healthRecheck(.init(reason: .checkSQL, since: .zero, retryAfter: .seconds(1)))))
        #expect(stopped.handle(.done, at: at(1, stop: true)) == .stop(.signal))
        #expect(stopped.drainNotes() == [.healthEnded(.checkSQL, waited: .seconds(1), resumed: false)])
    }

    @Test("the WAL budget is checked before every batch; other signals once a second")
    func healthInterval() throws {
        var wal = try machine("throttle: {max_wal_mb_per_second: 10}")
        wal.lastHealthCheck = nil
        #expect(wal.next(at: at(0)) == .readHealth(slow: true))
        #expect(wal.handle(.health(HealthReading()), at: at(0)) == .claim(preferring: nil))
        _ = wal.handle(.claimed(claim()), at: at(0))
        _ = wal.handle(.upperKey(upper(10, 10)), at: at(0))
        // The WAL budget is charged before the next batch; the slow signals wait for their second.
        #expect(wal.handle(.written(Written(rows: 10), after: .milliseconds(5)), at: at(0.01)) == .readHealth(slow: false))
        let over = HealthReading(walWait: .read(0.05))
        #expect(wal.handle(.health(over), at: at(0.01)) == .setThrottle(.walRate, detail: "WAL over the budget of 10 MB/s; next batch in 50 ms"))
        #expect(wal.handle(.done, at: at(0.01)) == .rest(.milliseconds(50), everyWorker: false))
        var plain = try machine(state: .checkingHealth(nil))
        #expect(plain.handle(.health(HealthReading()), at: at(0)) == .claim(preferring: nil))
        _ = plain.handle(.claimed(claim()), at: at(0))
        _ = plain.handle(.upperKey(upper(10, 10)), at: at(0))
        #expect(plain.handle(.written(Written(rows: 10), after: .milliseconds(5)), at: at(0.5)) == .claim(preferring: 0))
        _ = plain.handle(.claimed(claim(after: ["10"])), at: at(0.5))
        _ = plain.handle(.upperKey(upper(20, 10)), at: at(0.5))
        #expect(plain.handle(.written(Written(rows: 10), after: .milliseconds(5)), at: at(1)) == .readHealth(slow: true))
    }
}
