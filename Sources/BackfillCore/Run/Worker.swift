import Foundation
import PostgresClient

/// One worker of a run: the thin dispatcher between a `WorkerMachine`, which decides every step,
/// and a `BatchSession`, which carries it out. It performs the machine's action, reports what
/// happened as the machine's event, and turns the machine's notes into the run's events and
/// counters.
final class Worker {
    private let context: RunContext
    private let index: Int
    private let session: any BatchSession
    private let clock: any WorkerClock
    private var machine: WorkerMachine

    init(context: RunContext, session: any BatchSession, index: Int, clock: (any WorkerClock)? = nil) {
        self.context = context
        self.index = index
        self.session = session
        self.clock = clock ?? context
        machine = WorkerMachine(settings: .init(spec: context.spec, index: index, maxRuntime: context.options.maxRuntime.map { .milliseconds(Int64($0 * 1000)) }))
    }

    convenience init(context: RunContext, plan: JobPlan, index: Int) {
        self.init(context: context, session: PostgresBatchSession(context: context, plan: plan, index: index), index: index)
    }

    /// Each statement of a batch is cut off once it has run past the batch's ceiling
    /// (batch.max_ms) beyond the lock wait lock_timeout allows, or at timeouts.statement_ms,
    /// whichever is shorter: cancelled, halved, retried.
    static func statementMs(_ spec: JobSpec) -> Int { min(spec.timeouts.statementMs, spec.batch.ceilingMs + spec.timeouts.lockMs) }

    /// How long a batch transaction may wait for Backfill between its statements.
    static func idleLimitMs(_ spec: JobSpec) -> Int { max(1000, 4 * spec.batch.targetMs) }

    private var now: WorkerMachine.Now {
        WorkerMachine.Now(elapsed: clock.elapsedTime, stopRequested: context.shouldStop, sharedRest: max(.zero, clock.sharedRest))
    }

    func run() -> WorkerResult {
        defer { session.disconnect() }
        var action = machine.start()
        while true {
            switch action {
            case .finish: return .done
            case .stop(let reason): return .stopped(reason)
            case .fail(let failure): return .failed(failure)
            default: break
            }
            let event = perform(action)
            action = machine.handle(event, at: now)
            report(machine.drainNotes())
        }
    }

    /// Carries out one action; a failure is the machine's to judge.
    func perform(_ action: WorkerMachine.Action) -> WorkerMachine.Event {
        let began = ContinuousClock.now
        do {
            return try dispatch(action)
        } catch let error as PostgresError {
            return .failed(error, after: ContinuousClock.now - began, watchdogWaited: session.watchdogWaited)
        } catch {
            return .unexpected("\(error)")
        }
    }

    private func dispatch(_ action: WorkerMachine.Action) throws -> WorkerMachine.Event {
        switch action {
        case .connect:
            do {
                let origin = try session.connect()
                // After a lost connection: the lease is checked at once, not at the next heartbeat.
                if case .connecting(_?, _) = machine.state { context.checkLease() }
                return .connected(origin: origin)
            } catch let error as PostgresError where error.code == .tooManyConnections {
                let wait = context.slotWait
                return .noSlot(error, othersConnected: wait.othersConnected, walkDone: wait.walkDone)
            }
        case .rest(let duration, let everyWorker):
            if everyWorker { clock.restAll(for: duration) }
            clock.sleep(duration)
            return .done
        case .heartbeat(let range, let rows):
            session.heartbeat(range: range, rowsDone: rows)
            return .done
        case .readHealth(let slow): return .health(try session.readHealth(slow: slow))
        case .setThrottle(let reason, let detail):
            try session.setThrottle(reason, detail: detail)
            return .done
        case .readJobState: return .jobState(try session.jobState())
        case .claim(let range): return .claimed(try session.claim(preferring: range))
        case .upperKey(let claim, let size, let bySpan): return .upperKey(try session.upperKey(claim, size: size, bySpan: bySpan))
        case .firstKey(let claim, let upper): return .firstKey(try session.firstKey(claim, atMost: upper))
        case .completeRange(let claim):
            try session.completeRange(claim)
            return .done
        case .write(let write):
            let began = ContinuousClock.now
            let written = try session.write(write)
            return .written(written, after: ContinuousClock.now - began)
        case .quarantine(let write, let error): return .quarantined(badRows: try session.quarantine(write, error: error))
        case .commitQuarantine(let write):
            try session.commitQuarantine(write)
            return .done
        case .rollback:
            session.rollback()
            return .done
        case .consumeRate(let rows, let rowsPerSecond): return .rateWait(try session.consumeRate(rows: rows, rowsPerSecond: rowsPerSecond))
        case .openRanges: return .openRanges(try session.openRanges())
        case .split(let minimumRows): return .split(try session.splitLargestRange(minimumRows: minimumRows))
        case .splitPoint(let lower, let upper, let offset):
            let found = try session.splitPoint(lower: lower, upper: upper, offset: offset)
            return .splitPoint(key: found?.key, walked: found?.walked ?? 0)
        case .beginProbe:
            try session.beginProbe()
            return .done
        case .probe(let lower, let upper):
            try session.probe(lower: lower, upper: upper)
            return .done
        case .undoProbe:
            try session.undoProbe()
            return .done
        case .stop, .finish, .fail:
            return .done
        }
    }

    private func event(_ body: RunEvent.Body) { context.emit(body) }

    /// The machine's notes as the run's events and counters.
    private func report(_ notes: [WorkerMachine.Note]) {
        for note in notes {
            switch note {
            case .committed(let write, let written, let duration, let nextSize):
                let total = context.addBatch(rows: written.rows, ms: duration.milliseconds, lastKey: write.upper)
                event(.batch(.init(rows: written.rows, batchSize: write.size, keys: write.keys, duration: duration, attempt: write.attempt,
                                   lastKey: write.upper, range: write.claim.range, rowsDone: total.job, runRows: total.run, nextBatchSize: nextSize,
                                   bound: write.bound, walBytes: written.walBytes, hotUpdateRatio: written.hotShare, worker: index)))
            case .retry(let reason, let attempt, let delay, let nextSize, let error, let after):
                context.addRetry(reason)
                event(.retry(.init(reason: reason, attempt: attempt, delay: delay, failedAfter: error == nil ? nil : after ?? .zero,
                                   sqlstate: error?.code.raw, message: error?.message, source: .worker(index, nextBatchSize: nextSize))))
            case .blocking(let waiters, let longest, let rest, let nextSize):
                context.addThrottle(.blocking, for: rest)
                event(.throttle(.init(cause: .blocking(waiters: waiters, longestWait: longest, rest: rest, nextBatchSize: nextSize), worker: index)))
            case .watchdog(let waited, let rest, let nextSize):
                context.addThrottle(.blocking, for: rest)
                event(.throttle(.init(cause: .watchdog(longestWait: waited, rest: rest, nextBatchSize: nextSize), worker: index)))
            case .rateLimited(let wait):
                context.addThrottle(.maxRowsPerSecond, for: wait)
                event(.throttle(.init(cause: .rowBudget(wait: wait), worker: index)))
            case .healthWaiting(let reason, let detail):
                event(.throttle(.init(cause: .waiting(reason, detail: detail), worker: index)))
            case .healthEnded(let reason, let waited, let resumed):
                context.addThrottle(reason, for: waited)
                if resumed { event(.throttle(.init(cause: .resumed(reason, waited: waited), worker: index))) }
            case .badRow(let key, let error, let range, let badRows):
                context.addBadRow()
                event(.badRow(.init(key: key, sqlstate: error.code.raw, message: error.message, detail: error.detail, range: range, badRows: badRows, worker: index)))
            case .tuned(let tuning, let applied, let retiring):
                event(.tune(.init(maxRowsPerSecond: applied.throttle.maxRowsPerSecond, target: .milliseconds(applied.batch.targetMs), pause: .milliseconds(applied.batch.pauseMs),
                                  workers: tuning?.workers, by: tuning?.by, reset: tuning == nil, stopping: retiring, worker: index)))
            case .slotWaiting(let error):
                event(.connections(.init(state: .waiting, message: "worker \(index) waits for a connection slot: \(error.message)", worker: index)))
            case .slotFound:
                event(.connections(.init(state: .connected, message: "worker \(index) got a connection slot", worker: index)))
            case .origin(let name):
                event(.cdc(.origin(name, worker: index)))
            }
        }
    }
}

/// The worker's time: the run's clock, its rests, and the rest every worker of the process
/// shares after live traffic waited. The run's context is one; the tests' is manual.
protocol WorkerClock: AnyObject {
    var elapsedTime: Duration { get }
    /// Sleeps (in slices, so that a stop is quick).
    func sleep(_ duration: Duration)
    /// Every worker of the process rests this long from now.
    func restAll(for duration: Duration)
    /// How long this worker must still rest because another one was told to.
    var sharedRest: Duration { get }
}

extension RunContext: WorkerClock {
    var elapsedTime: Duration { ContinuousClock.now - started }
    func sleep(_ duration: Duration) { sleep(ms: Int(duration.milliseconds.rounded(.up))) }
    func restAll(for duration: Duration) { restAll(until: .now + duration) }
}

/// A batch changed rows outside its key range (operator SQL escaped its place), or its upper
/// key did not move past its checkpoint (the walk would loop). The batch is rolled back and the
/// job stops (exit 1).
struct RangeViolation: Error, CustomStringConvertible {
    var range: Int
    var lower: [String]?
    var upper: [String]
    var keys: Int
    /// The rows changed, and those outside the range; nil when the checkpoint's check constraint
    /// refused the batch inside its own statement (the counts died with it).
    var rows: Int64?
    var outside: Int64?
    var stuck = false
    /// A physical walk's batch changed rows that still match `where`: the job, for its `where`
    /// and `set`.
    var stillMatching: JobSpec?

    var description: String {
        let from = lower.map { "(" + $0.joined(separator: ", ") + ")" } ?? "the start"
        if let spec = stillMatching {
            let sets: String = if case .update(let assignments) = spec.action { assignments.map { "\($0.column): \($0.expression)" }.joined(separator: ", ") } else { "" }
            return "batch in range \(range) over pages after ctid \(lower?.first ?? "(0,0)") up to \(upper.first ?? "?") changed rows that still match `where` afterwards, so its checkpoint's check constraint (ranges_batch_leaves_where_false) refused it; it was rolled back and the job stopped: "
                + "in \(spec.file), `set` (\(sets)) must make `where` (\(spec.whereClause ?? "")) false for every row it changes, or a physical walk would change a row again when it reaches the row's new version; "
                + "add to `set` what makes `where` false (e.g. the column `where` tests), or narrow `where`"
        }
        guard let rows, let outside else {
            return "batch in range \(range) after key \(from) (at most \(keys) keys) changed rows outside its key range, so its checkpoint's check constraint (ranges_batch_within_range) refused it; it was rolled back and the job stopped: the job's `where` or `set` reaches beyond its place, check them with `backfill plan`"
        }
        if stuck {
            return "batch in range \(range) after key \(from) found the same key as its upper bound: the walk would not move (a key whose text form does not read back as the same value?); it was rolled back and the job stopped"
        }
        return "batch in range \(range) over keys after \(from) up to (\(upper.joined(separator: ", "))) walked \(keys) keys but changed \(rows) rows, \(outside) of them outside its key range; it was rolled back and the job stopped: the job's `where` or `set` reaches beyond its place, check them with `backfill plan`"
    }
}
