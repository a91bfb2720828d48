import Foundation
import PostgresClient

/// One worker of a run: the I/O shell around a `WorkerMachine`. It owns a connection, carries out
/// the machine's actions (a batch transaction, a health check, a split, a rest, a reconnect) and
/// reports what happened; every decision is the machine's.
final class Worker {
    private let context: RunContext
    private let index: Int
    private let name: String
    /// The connection; nil only before the first connect.
    private var connection: Connection?
    private var machine: WorkerMachine
    private var gate: HealthGate
    private var cost: WriteCost
    private let plan: JobPlan
    private var spec: JobSpec { context.spec }
    private var store: any RunStore { context.store }
    /// The range this worker walked last; it claims it first again.
    private var preferred: Int?
    /// Where the batch in flight started, for failures.
    private var batchStart: (range: Int?, key: [String]?) = (nil, nil)
    private var rowsDone: Int64 = 0
    private var lastHeartbeat = -Double.infinity

    init(context: RunContext, plan: JobPlan, index: Int) {
        self.context = context
        self.plan = plan
        self.index = index
        self.name = "\(context.runnerName):w\(index)"
        machine = WorkerMachine(settings: .init(spec: context.spec, maxRuntime: context.options.maxRuntime, healthInterval: context.spec.throttle.maxWalMBPerSecond > 0 ? 0 : 1))
        cost = WriteCost(tableOID: plan.tableOID)
        gate = HealthGate(throttle: context.spec.throttle, tableOID: plan.tableOID, checkTimeoutMs: context.spec.timeouts.statementMs) { [store = context.store, spec = context.spec] db in
            try store.consumeWal(spec.name, mbPerSecond: spec.throttle.maxWalMBPerSecond, db: db)
        }
    }

    private func event(_ kind: RunEvent.Kind, _ fields: [(String, RunEvent.Value)]) {
        context.event(kind, fields + [("worker", .int(Int64(index)))])
    }

    private var now: WorkerMachine.Now {
        WorkerMachine.Now(seconds: context.elapsed, stopRequested: context.shouldStop, sharedRestMs: max(0, context.sharedRest.milliseconds))
    }

    private func db() throws -> Connection {
        guard let connection else { throw PostgresError(code: .connectionFailure, severity: "CLIENT", message: "not connected") }
        return connection
    }

    func run() -> WorkerResult {
        do {
            connection = try Connection(context.options.database, applicationName: context.applicationName)
        } catch let error as PostgresError {
            return .failed(RunFailure(sqlstate: error.code.raw, message: "worker \(index) could not connect: \(error.message)", hint: error.hint))
        } catch {
            return .failed(RunFailure(message: "worker \(index) could not connect: \(error)"))
        }
        var action = machine.handle(.ready, at: now)
        while true {
            let event: WorkerMachine.Event
            var committed: Committed?
            switch action {
            case .finish: return .done
            case .stop(let reason): return .stopped(reason)
            case .fail(let failure): return .failed(failure)
            case .runBatch(let size):
                do {
                    (event, committed) = try runBatch(size: size)
                } catch let error as PostgresError {
                    event = .failed(error, range: batchStart.range, afterKey: batchStart.key)
                } catch let violation as RangeViolation {
                    return .failed(RunFailure(range: violation.range, afterKey: violation.lower, message: violation.description))
                } catch {
                    return .failed(RunFailure(range: batchStart.range, afterKey: batchStart.key, message: "\(error)"))
                }
            case .checkHealth:
                switch waitUntilHealthy() {
                case .success(nil): event = .healthy
                case .success(let result?): return result
                case .failure(let error): event = .failed(error, range: nil, afterKey: nil)
                }
            case .consumeRate(let rows):
                do {
                    event = .rateWait(seconds: try store.consumeRate(spec.name, rows: rows, rowsPerSecond: spec.throttle.maxRowsPerSecond, db: try db()))
                } catch let error as PostgresError {
                    event = .failed(error, range: nil, afterKey: nil)
                } catch {
                    return .failed(RunFailure(message: "\(error)"))
                }
            case .rest(let ms, let everyWorker):
                if everyWorker { context.restAll(until: .now + .milliseconds(Int64(ms))) }
                sleep(ms: ms)
                event = .ready
            case .split:
                do {
                    event = .split(try store.splitLargestRange(spec.name, plan: plan, minimumRows: machine.settings.splitMinimumRows, db: try db()))
                } catch let error as PostgresError {
                    event = .failed(error, range: nil, afterKey: nil)
                } catch {
                    return .failed(RunFailure(message: "\(error)"))
                }
            case .reconnect:
                event = reconnect()
                if case .reconnected = event, let holder = (try? context.renewLease()) ?? nil { return .held(holder) }
            }
            let attempt = machine.attempt
            action = machine.handle(event, at: now)
            if let committed {
                self.event(.batch, [("rows", .int(committed.rows)), ("batch_size", .int(Int64(committed.size))), ("keys", .int(Int64(committed.walked))),
                                    ("duration_ms", .double(committed.ms)), ("attempt", .int(Int64(attempt))), ("last_key", .strings(committed.lastKey)),
                                    ("range", .int(Int64(committed.range))), ("rows_done", .int(committed.total.job)), ("run_rows", .int(committed.total.run)),
                                    ("next_batch_size", .int(Int64(machine.sizer.size)))] + cost.fields)
            }
            emit(machine.drainNotes())
        }
    }

    /// A committed batch, for its event.
    private struct Committed {
        var rows: Int64, size: Int, walked: Int, ms: Double, lastKey: [String], range: Int, total: (run: Int64, job: Int64)
    }

    /// Logs the machine's decisions as events and counters.
    private func emit(_ notes: [WorkerMachine.Note]) {
        for note in notes {
            switch note {
            case .retry(let reason, let attempt, let delayMs, let nextSize):
                context.addRetry(reason)
                var fields: [(String, RunEvent.Value)] = [("reason", .string(reason.rawValue)), ("attempt", .int(Int64(attempt))),
                                                          ("delay_ms", .int(Int64(delayMs))), ("batch_size", .int(Int64(nextSize)))]
                if let failure = lastFailure {
                    fields += [("duration_ms", .double(failure.ms)), ("sqlstate", .string(failure.error.code.raw)), ("message", .string(failure.error.message))]
                }
                event(.retry, fields)
            case .blocking(let waiters, let longest, let restMs, let nextSize):
                context.addThrottle("blocking", seconds: restMs / 1000)
                event(.throttle, [("reason", .string("blocking")), ("waiters", .int(Int64(waiters))), ("longest_wait_ms", .double(longest)),
                                  ("wait_ms", .double(restMs)), ("batch_size", .int(Int64(nextSize)))])
            case .rateLimited(let waitMs):
                context.addThrottle("max_rows_per_second", seconds: waitMs / 1000)
                event(.throttle, [("reason", .string("max_rows_per_second")), ("wait_ms", .double(waitMs))])
            }
        }
    }

    /// The failure behind the last retry note, for its event.
    private var lastFailure: (error: PostgresError, ms: Double)?

    /// Runs one batch transaction and reports how it went; a failed batch throws.
    private func runBatch(size: Int) throws -> (WorkerMachine.Event, Committed?) {
        heartbeat()
        let began = ContinuousClock.now
        let db = try db()
        context.stop.setInFlight(db.makeCancelToken(), worker: index)
        defer { context.stop.setInFlight(nil, worker: index) }
        let result: BatchResult
        cost.beforeBatch(db)
        do {
            result = try batch(size: size, db: db)
        } catch let error as PostgresError {
            lastFailure = (error, (ContinuousClock.now - began).milliseconds)
            throw error
        }
        switch result {
        case .committed(let rows, let walked, let lastKey, let range, let waiters):
            let ms = (ContinuousClock.now - began).milliseconds
            cost.afterBatch(db, at: context.elapsed)
            rowsDone += rows
            let total = context.addBatch(rows: rows, ms: ms, lastKey: lastKey)
            return (.committed(rows: rows, keys: walked, ms: ms, waiters: waiters),
                    Committed(rows: rows, size: size, walked: walked, ms: ms, lastKey: lastKey, range: range, total: total))
        case .rangeDone:
            preferred = nil
            return (.rangeDone, nil)
        case .busy:
            return (.busy(openRanges: try store.openRanges(spec.name, db: db)), nil)
        case .jobState(let state):
            return (.jobState(state), nil)
        }
    }

    private enum BatchResult {
        case committed(rows: Int64, walked: Int, lastKey: [String], range: Int, waiters: Waiters)
        case rangeDone
        case busy
        case jobState(JobState)
    }

    /// One batch transaction: claim a range, find the upper key, run the batch, move the
    /// range's checkpoint, commit (or, for a dry run, roll back).
    private func batch(size: Int, db: Connection) throws -> BatchResult {
        let settings = ["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(spec.timeouts.statementMs)ms'"]
            + plan.batchSettings + SessionPins.settings
        try db.execute((["BEGIN"] + settings.map { "SET LOCAL \($0)" }).joined(separator: "; "))
        batchStart = (preferred, nil)
        do {
            guard let claim = try store.claim(spec.name, preferring: preferred, db: db) else {
                try db.execute("ROLLBACK")
                return .busy
            }
            if claim.jobState == .paused || claim.jobState == .cancelled {
                try db.execute("ROLLBACK")
                return .jobState(claim.jobState)
            }
            preferred = claim.range
            batchStart = (claim.range, claim.lower)
            let lower = claim.lower.map { $0.map(PostgresValue.text) } ?? []
            let ceiling = claim.ceiling.map { $0.map(PostgresValue.text) } ?? []
            guard let upperRow = try db.query(
                plan.statements.upperBound(afterKey: claim.lower != nil, belowCeiling: claim.ceiling != nil),
                lower + ceiling + [.int(Int64(size - 1))]).first
            else {
                try store.completeRange(spec.name, range: claim.range, db: db)
                try store.endBatch(db)
                return .rangeDone
            }
            let (upper, walked) = plan.statements.upperKey(upperRow)
            if let last = claim.lower, last == upper {
                throw RangeViolation(range: claim.range, lower: claim.lower, upper: upper, keys: 0, rows: 0, outside: 0, stuck: true)
            }
            let (rows, outside) = plan.statements.changed(by: try db.query(
                claim.lower == nil ? plan.statements.batchFromStart : plan.statements.batch, lower + upper.map(PostgresValue.text)))
            if outside > 0 {
                throw RangeViolation(range: claim.range, lower: claim.lower, upper: upper, keys: walked, rows: rows, outside: outside)
            }
            let waiters = try store.advance(spec.name, range: claim.range, lastKey: upper, rows: rows, keys: walked, worker: name,
                                            countWaiters: spec.throttle.whenBlocking, db: db)
            try store.endBatch(db)
            return .committed(rows: rows, walked: walked, lastKey: upper, range: claim.range, waiters: waiters)
        } catch {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// Records this worker's progress for `status`, every 2 s at most, outside batches.
    private func heartbeat() {
        guard context.elapsed - lastHeartbeat >= 2, let db = connection else { return }
        lastHeartbeat = context.elapsed
        let rate = context.elapsed > 0 ? Double(rowsDone) / context.elapsed : 0
        try? store.heartbeat(spec.name, worker: name, range: preferred, rowsDone: rowsDone, rowsPerSecond: rate, db: db)
    }

    /// Waits while a health throttle says so (replica lag, `check_sql`, autovacuum), holding no
    /// locks, re-checking every `interval`; a stop, the time box, or a pause or cancel ends the
    /// wait with a result. A failed check is returned as an error for the machine to judge.
    private func waitUntilHealthy() -> Result<WorkerResult?, PostgresError> {
        do {
            let db = try db()
            guard var (reason, detail) = try gate.check(at: context.elapsed, db: db) else { return .success(nil) }
            let since = context.elapsed
            try store.setThrottle(spec.name, reason: reason.rawValue, detail: detail, db: db)
            event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
            defer { context.addThrottle(reason.rawValue, seconds: context.elapsed - since) }
            while true {
                sleep(ms: Int(gate.retryAfter * 1000))
                if let stop = machine.stopReason(at: now) { return .success(.stopped(stop)) }
                if let state = try store.state(spec.name, db: db), state == .paused || state == .cancelled {
                    try store.setThrottle(spec.name, reason: nil, db: db)
                    return .success(.stopped(state == .paused ? .paused : .cancelled))
                }
                guard let next = try gate.check(at: context.elapsed, db: db) else { break }
                if next.0 != reason {
                    (reason, detail) = next
                    try store.setThrottle(spec.name, reason: reason.rawValue, detail: detail, db: db)
                    event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
                }
            }
            try store.setThrottle(spec.name, reason: nil, db: db)
            event(.throttle, [("reason", .string(reason.rawValue)), ("state", .string("resumed")), ("wait_ms", .double((context.elapsed - since) * 1000))])
            return .success(nil)
        } catch let error as PostgresError {
            return .failure(error)
        } catch {
            return .failure(PostgresError(code: .clientError, severity: "CLIENT", message: "\(error)"))
        }
    }

    /// Opens a new connection after a lost one.
    private func reconnect() -> WorkerMachine.Event {
        connection?.close()
        do {
            connection = try Connection(context.options.database, applicationName: context.applicationName)
            return .reconnected
        } catch let error as PostgresError {
            event(.retry, [("reason", .string(RetryReason.connectionLost.rawValue)), ("attempt", .int(Int64(machine.attempt))),
                           ("message", .string("reconnecting: \(error.message)"))])
            return .reconnectFailed(error)
        } catch {
            return .reconnectFailed(PostgresError(code: .connectionFailure, severity: "CLIENT", message: "\(error)"))
        }
    }

    /// Sleeps in short slices so that a stop request is honoured quickly.
    private func sleep(ms: Int) {
        var left = ms
        while left > 0 && !context.shouldStop {
            let slice = min(left, 50)
            usleep(useconds_t(slice * 1000))
            left -= slice
        }
    }
}

/// A batch changed rows outside its key range (operator SQL escaped its place), or its upper
/// key did not move past its checkpoint (the walk would loop). The batch is rolled back and the
/// job stops (exit 1).
struct RangeViolation: Error, CustomStringConvertible {
    var range: Int
    var lower: [String]?
    var upper: [String]
    var keys: Int
    var rows: Int64
    var outside: Int64
    var stuck = false

    var description: String {
        let from = lower.map { "(" + $0.joined(separator: ", ") + ")" } ?? "the start"
        if stuck {
            return "batch in range \(range) after key \(from) found the same key as its upper bound: the walk would not move (a key whose text form does not read back as the same value?); it was rolled back and the job stopped"
        }
        return "batch in range \(range) over keys after \(from) up to (\(upper.joined(separator: ", "))) walked \(keys) keys but changed \(rows) rows, \(outside) of them outside its key range; it was rolled back and the job stopped: the job's `where` or `set` reaches beyond its place, check them with `backfill plan`"
    }
}
