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

    private func event(_ body: RunEvent.Body) {
        context.emit(body)
    }

    private var now: WorkerMachine.Now {
        WorkerMachine.Now(seconds: context.elapsed, stopRequested: context.shouldStop, sharedRestMs: max(0, context.sharedRest.milliseconds))
    }

    /// A worker's connection; directly to the server (no pooler in between), the statements of
    /// every batch are prepared once and then only executed.
    private static func connect(_ context: RunContext) throws -> Connection {
        let db = try SessionPins.connect(context.options.database, applicationName: context.applicationName)
        db.preparesStatements = db.direct == true
        return db
    }

    private func db() throws -> Connection {
        guard let connection else { throw PostgresError(code: .connectionFailure, severity: "CLIENT", message: "not connected") }
        return connection
    }

    func run() -> WorkerResult {
        defer { if connection != nil { context.workerConnection(false) } }
        do {
            guard let fresh = try connectForSlot() else { return context.slotWait.walkDone ? .done : .stopped(.signal) }
            connection = fresh
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
                switch guarded({ try runBatch(.next(size: size)) }) {
                case .success(let result): (event, committed) = result
                case .failure(.failed(let failure)): return .failed(failure)
                case .failure(.retired): return .done
                }
            case .bisect(let range, .split(let lower, let upper, let offset)):
                do {
                    event = try splitPoint(range: range, lower: lower, upper: upper, offset: offset)
                } catch let error as PostgresError {
                    event = .failed(error, range: range, afterKey: lower)
                } catch {
                    return .failed(RunFailure(range: range, afterKey: lower, message: "\(error)"))
                }
            case .bisect(let range, .attempt(let lower, let upper, let keys)):
                switch guarded({ try runBatch(.part(range: range, lower: lower, upper: upper, keys: keys)) }) {
                case .success(let result): (event, committed) = result
                case .failure(.failed(let failure)): return .failed(failure)
                case .failure(.retired): return .done
                }
            case .bisect(_, .finished):
                event = .ready
            case .findBadKey(let search):
                event = .badKeyFound(findBadKey(search))
            case .checkHealth:
                switch waitUntilHealthy() {
                case .success(nil): event = .healthy
                case .success(let result?): return result
                case .failure(let error): event = .failed(error, range: nil, afterKey: nil)
                }
            case .consumeRate(let rows):
                do {
                    event = .rateWait(seconds: try store.consumeRate(spec.name, rows: rows, rowsPerSecond: machine.settings.rowsPerSecond, db: try db()))
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
                self.event(.batch(.init(rows: committed.rows, batchSize: committed.size, keys: committed.walked, duration: .milliseconds(committed.ms), attempt: attempt,
                                        lastKey: committed.lastKey, range: committed.range, rowsDone: committed.total.job, runRows: committed.total.run,
                                        nextBatchSize: machine.sizer.size, bound: .init(rawValue: bound) ?? .counted, walBytes: cost.walBytes,
                                        hotUpdateRatio: cost.hotShare, worker: index)))
            }
            emit(machine.drainNotes())
        }
    }

    /// Runs a batch and turns what went wrong into the machine's event; a failure that ends the
    /// worker at once (a range violation, one bad row more than `on_error.max_rows`) is returned
    /// as `.failure`.
    private func guarded(_ body: () throws -> (WorkerMachine.Event, Committed?)) -> Result<(WorkerMachine.Event, Committed?), Ending> {
        do {
            return .success(try body())
        } catch is Retired {
            return .failure(.retired)
        } catch let error as PostgresError where error.code == .queryCanceled && watchdogFired != nil && !context.shouldStop {
            return .success((.cancelledForWaiters(waitedMs: watchdogFired ?? 0), nil))
        } catch let error as PostgresError {
            if let written = batchWrite {
                return .success((.batchFailed(error, range: written.range, lower: written.lower, upper: written.upper, keys: written.keys), nil))
            }
            return .success((.failed(error, range: batchStart.range, afterKey: batchStart.key), nil))
        } catch let violation as RangeViolation {
            return .failure(.failed(RunFailure(range: violation.range, afterKey: violation.lower, message: violation.description)))
        } catch let limit as BadRowLimit {
            return .failure(.failed(limit.failure))
        } catch {
            return .failure(.failed(RunFailure(range: batchStart.range, afterKey: batchStart.key, message: "\(error)")))
        }
    }

    /// Why a batch ends the worker: a failure, or retirement (`backfill tune --workers` asked for
    /// fewer workers than run).
    private enum Ending: Error {
        case failed(RunFailure)
        case retired
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
                event(.retry(.init(reason: reason, attempt: attempt, delay: .milliseconds(delayMs), failedAfter: lastFailure.map { .milliseconds($0.ms) },
                                   sqlstate: lastFailure?.error.code.raw, message: lastFailure?.error.message, source: .worker(index, nextBatchSize: nextSize))))
            case .blocking(let waiters, let longest, let restMs, let nextSize):
                context.addThrottle("blocking", seconds: restMs / 1000)
                event(.throttle(.init(cause: .blocking(waiters: waiters, longestWait: .milliseconds(longest), rest: .milliseconds(restMs), nextBatchSize: nextSize),
                                      worker: index)))
            case .watchdog(let waited, let restMs, let nextSize):
                context.addThrottle("blocking", seconds: restMs / 1000)
                event(.throttle(.init(cause: .watchdog(longestWait: .milliseconds(waited), rest: .milliseconds(restMs), nextBatchSize: nextSize), worker: index)))
            case .rateLimited(let waitMs):
                context.addThrottle("max_rows_per_second", seconds: waitMs / 1000)
                event(.throttle(.init(cause: .rowBudget(wait: .milliseconds(waitMs)), worker: index)))
            }
        }
    }

    /// The failure behind the last retry note, for its event.
    private var lastFailure: (error: PostgresError, ms: Double)?
    /// How long a live session had waited when the watchdog cancelled the last batch, if it did.
    private var watchdogFired: Double?

    /// Runs `body` as the statement in flight: a stop cancels it, and so does the watchdog when
    /// live traffic waits on it too long.
    private func inFlight<T>(_ db: Connection, _ body: () throws -> T) rethrows -> T {
        let token = db.makeCancelToken()
        context.stop.setInFlight(token, worker: index)
        if let token { context.watchdog?.watch(index, pid: db.backendPID, token: token) }
        watchdogFired = nil
        defer {
            context.stop.setInFlight(nil, worker: index)
            watchdogFired = context.watchdog?.unwatch(index)
        }
        return try body()
    }

    /// Runs one batch transaction and reports how it went; a failed batch throws.
    private func runBatch(_ kind: BatchKind) throws -> (WorkerMachine.Event, Committed?) {
        heartbeat()
        let began = ContinuousClock.now
        let db = try db()
        let result: BatchResult
        do {
            result = try inFlight(db) { try batch(kind, db: db) }
        } catch let error as PostgresError {
            lastFailure = (error, (ContinuousClock.now - began).milliseconds)
            throw error
        }
        switch result {
        case .committed(let rows, let walked, let lastKey, let range, let waiters):
            let ms = (ContinuousClock.now - began).milliseconds
            rowsDone += rows
            let total = context.addBatch(rows: rows, ms: ms, lastKey: lastKey)
            return (.committed(rows: rows, keys: walked, ms: ms, waiters: waiters),
                    Committed(rows: rows, size: kind.size, walked: walked, ms: ms, lastKey: lastKey, range: range, total: total))
        case .rangeDone:
            preferred = nil
            return (.rangeDone, nil)
        case .busy:
            return (.busy(openRanges: try store.openRanges(spec.name, db: db)), nil)
        case .jobState(let state):
            return (.jobState(state), nil)
        case .quarantined(let key, let error, let range, let badRows):
            context.addBadRow()
            event(.badRow(.init(key: key, sqlstate: error.code.raw, message: error.message, detail: error.detail, range: range, badRows: badRows, worker: index)))
            return (.quarantined, nil)
        case .lost:
            return (.bisectionLost, nil)
        case .firstKey(let key):
            return (.firstKey(key), nil)
        case .retired:
            throw Retired()
        }
    }

    /// What a batch transaction walks: the next keys of a range, or a part of a failed batch
    /// being bisected (which must start at the range's checkpoint).
    private enum BatchKind {
        case next(size: Int)
        case part(range: Int, lower: [String]?, upper: [String], keys: Int)

        var size: Int {
            switch self {
            case .next(let size): size
            case .part(_, _, _, let keys): keys
            }
        }
    }

    /// `backfill tune --workers` asked for fewer workers than this one's number.
    private struct Retired: Error {}

    /// The live overrides in force for this worker (`backfill tune`), as its last claim read them.
    private var tuning: Tuning?

    /// Takes the overrides a claim read, with a `tune` event; returns true when this worker is
    /// no longer wanted (its number is at or above the overridden worker count).
    private func retune(_ new: Tuning?) -> Bool {
        tuning = new
        let tuned = (new ?? Tuning()).applied(to: spec)
        machine.tune(rowsPerSecond: tuned.throttle.maxRowsPerSecond, targetMs: tuned.batch.targetMs, pauseMs: tuned.batch.pauseMs)
        let retire = new?.workers.map { index >= $0 } ?? false
        event(.tune(.init(maxRowsPerSecond: tuned.throttle.maxRowsPerSecond, target: .milliseconds(tuned.batch.targetMs), pause: .milliseconds(tuned.batch.pauseMs),
                          workers: new?.workers, by: new?.by, reset: new == nil, stopping: retire, worker: index)))
        return retire
    }

    private enum BatchResult {
        case committed(rows: Int64, walked: Int, lastKey: [String], range: Int, waiters: Waiters)
        case rangeDone
        case busy
        case jobState(JobState)
        /// A part of one key failed with a data error: its row was quarantined in the same
        /// transaction that moved the checkpoint past it; the job now has `badRows`.
        case quarantined(key: [String], error: PostgresError, range: Int, badRows: Int64)
        /// The part's range is not where the bisection stands (another worker moved it).
        case lost
        /// A part of one key has this key before it (a row inserted since it was counted).
        case firstKey([String])
        case retired
    }

    /// How this worker's batches find their upper key (a dense integer key: by arithmetic), and
    /// how the last batch found it (the batch event's `bound`).
    private var density = KeyDensity()
    private var bound = "counted"

    /// The batch in flight once its keys are known: a failure of its statement is the batch's.
    private var batchWrite: (range: Int, lower: [String]?, upper: [String], keys: Int)?

    /// The settings of every batch transaction (`SET LOCAL`): timeouts, the plan's settings,
    /// the session pins, asynchronous commit (the checkpoint commits with the data, so a crash
    /// loses both together and the rerun redoes exactly that work), and a limit on how long the
    /// transaction may sit idle waiting for Backfill (a frozen runner's transaction is ended).
    private lazy var batchSettings: [String] = {
        var settings = ["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(Self.statementMs(spec))ms'",
                        "synchronous_commit = off", "idle_in_transaction_session_timeout = '\(Self.idleLimitMs(spec))ms'"]
        if (connection?.serverVersion ?? 0) >= 170_000 {
            settings.append("transaction_timeout = '\(spec.timeouts.statementMs * 2 + Self.idleLimitMs(spec))ms'")
        }
        return settings + plan.batchSettings + SessionPins.settings
    }()

    /// Each statement of a batch is cut off once it has run past the batch's ceiling
    /// (batch.max_ms) beyond the lock wait lock_timeout allows, or at timeouts.statement_ms,
    /// whichever is shorter: cancelled, halved, retried.
    static func statementMs(_ spec: JobSpec) -> Int { min(spec.timeouts.statementMs, spec.batch.ceilingMs + spec.timeouts.lockMs) }

    /// How long a batch transaction may wait for Backfill between its statements.
    static func idleLimitMs(_ spec: JobSpec) -> Int { max(1000, 4 * spec.batch.targetMs) }

    /// One batch transaction in at most three round trips: (1) `BEGIN`, the settings and the
    /// claim of a range; (2) the upper key, read from the key's index; (3) the batch statement,
    /// the checkpoint and `COMMIT`, sent together, so that the server takes the table's row locks
    /// and releases them without ever waiting for Backfill. For `update` and `delete` the
    /// checkpoint is part of the batch statement; a `sql` action's checkpoint needs its row count,
    /// so it follows in a fourth round trip, with `idle_in_transaction_session_timeout` as the
    /// bound on a frozen runner. A dry run ends with `ROLLBACK` instead.
    private lazy var opening: [Connection.Statement] = [Connection.Statement("BEGIN ISOLATION LEVEL READ COMMITTED"), Connection.Statement(SessionPins.setLocal(batchSettings), prepared: true)]

    private func batch(_ kind: BatchKind, db: Connection) throws -> BatchResult {
        batchStart = (preferred, nil)
        batchWrite = nil
        bound = "counted"
        var wanted: Int?
        if case .part(let range, _, _, _) = kind { wanted = range }
        do {
            guard let claim = try store.open(opening, job: spec.name, preferring: wanted ?? preferred, db: db) else {
                try db.execute("ROLLBACK")
                return wanted == nil ? .busy : .lost
            }
            if claim.jobState == .paused || claim.jobState == .cancelled {
                try db.execute("ROLLBACK")
                return .jobState(claim.jobState)
            }
            if let pid = claim.backendPID { context.watchdog?.runsOn(index, pid: pid) }
            if claim.tuning != tuning, retune(claim.tuning) {
                try db.execute("ROLLBACK")
                return .retired
            }
            preferred = claim.range
            batchStart = (claim.range, claim.lower)
            let afterKey = claim.lower != nil
            let lower = claim.lower.map { $0.map(PostgresValue.text) } ?? []
            let upper: [String], walked: Int
            switch kind {
            case .next(let size):
                let ceiling = claim.ceiling.map { $0.map(PostgresValue.text) } ?? []
                let values = lower + ceiling + [.int(Int64(size - 1))]
                // A dense integer key: the upper key by arithmetic (KeyDensity), else counted.
                let start = claim.lower.flatMap { $0.count == 1 ? Int64($0[0]) : nil }
                var row: PostgresRow?
                if start != nil, density.bySpan, let span = plan.statements.spanBound(belowCeiling: claim.ceiling != nil) {
                    row = try db.query(span, values, prepared: db.preparesStatements).first
                    if row == nil { density.emptySpan() } else { density.spanned() }
                }
                let counted = row == nil
                if counted {
                    row = try db.query(plan.statements.upperBound(afterKey: afterKey, belowCeiling: claim.ceiling != nil), values, prepared: db.preparesStatements).first
                } else {
                    bound = "span"
                }
                guard let upperRow = row else {
                    try store.completeRange(spec.name, range: claim.range, db: db)
                    try db.execute(store.closing)
                    return .rangeDone
                }
                (upper, walked) = plan.statements.upperKey(upperRow)
                if counted, let start, let end = upper.first.flatMap({ Int64($0) }) { density.counted(keys: walked, lower: start, upper: end) }
                if let last = claim.lower, last == upper {
                    throw RangeViolation(range: claim.range, lower: claim.lower, upper: upper, keys: 0, rows: 0, outside: 0, stuck: true)
                }
            case .part(let range, let partLower, let partUpper, let keys):
                // The part starts where the bisection stands; another worker that moved the range
                // meanwhile ends the bisection (its batches go on from the checkpoint).
                guard claim.range == range, claim.lower == partLower else {
                    try db.execute("ROLLBACK")
                    return .lost
                }
                if keys == 1, let first = try db.query(
                    plan.statements.upperBound(afterKey: afterKey, belowCeiling: true),
                    lower + partUpper.map(PostgresValue.text) + [.int(0)]).first.map({ plan.statements.upperKey($0).key }), first != partUpper {
                    try db.execute("ROLLBACK")
                    return .firstKey(first)
                }
                (upper, walked) = (partUpper, keys)
            }
            // A part of one key is written under a savepoint: if it fails, its row is recorded and
            // the checkpoint moved past it in the same transaction.
            var single = false
            if case .part(_, _, _, 1) = kind { single = true }
            batchWrite = (claim.range, claim.lower, upper, walked)
            let bounds = lower + upper.map(PostgresValue.text)
            let waiters = spec.throttle.whenBlocking ? [Connection.Statement(CheckpointStore.waitersQuery, prepared: true)] : []
            let closing = Connection.Statement(store.closing)
            // cdc.messages: the batch's message, first in its last round trip (before its changes).
            let message = ChangeCapture.message(spec, run: context.runID, worker: name, range: claim.range, lower: claim.lower, upper: upper, keys: walked)
            func checkpoint(rows: String, outside: String, first: Int) -> Connection.Statement? {
                store.checkpoint(spec.name, range: claim.range, lastKey: upper, keys: walked, worker: name, rows: rows, outside: outside, first: first)
            }
            // Just before COMMIT: the WAL position and the table's update counters (WriteCost).
            let finish = waiters + [cost.reading, closing]
            let end = single ? [] : finish
            if single { try db.execute("SAVEPOINT backfill_part; SET CONSTRAINTS ALL IMMEDIATE") }
            let changed: (rows: Int64, outside: Int64)
            var results: [QueryResult]
            do {
                if let counts = plan.statements.counts(afterKey: afterKey),
                   let moved = checkpoint(rows: counts.rows, outside: counts.outside, first: bounds.count + 1) {
                    // update/delete: data and checkpoint (and, with `journal`, what the batch
                    // replaced) in one statement, then COMMIT, in one round trip.
                    let journal = spec.journal ? store.journal(spec.name, first: bounds.count + moved.parameters.count + 1) : nil
                    results = try db.pipeline(
                        message + [Connection.Statement(plan.statements.batch(afterKey: afterKey, checkpoint: moved.sql, journal: journal?.sql),
                                                        bounds + moved.parameters + (journal?.parameters ?? []), prepared: true)] + end)
                    changed = plan.statements.changed(by: results[message.count])
                } else {
                    let statement = Connection.Statement(afterKey ? plan.statements.batch : plan.statements.batchFromStart, bounds, prepared: true)
                    if let moved = checkpoint(rows: "0", outside: "0", first: 1) {
                        // A sql action: its own statement, then the checkpoint with its row count.
                        changed = plan.statements.changed(by: try db.pipeline(message + [statement])[message.count])
                        let counted = checkpoint(rows: String(changed.rows), outside: "0", first: 1) ?? moved
                        results = try db.pipeline([counted] + end)
                    } else {
                        // A dry run: the batch, who waits on it, and ROLLBACK, in one round trip.
                        results = try db.pipeline(message + [statement] + end)
                        changed = plan.statements.changed(by: results[message.count])
                    }
                }
            } catch let error as PostgresError where single && Bisection.isolates(error) && !Self.isRangeCheck(error) {
                return try quarantine(upper, error: error, claim: claim, db: db)
            }
            if changed.outside > 0 {
                throw RangeViolation(range: claim.range, lower: claim.lower, upper: upper, keys: walked, rows: changed.rows, outside: changed.outside)
            }
            if single { results += try db.pipeline(finish) }
            store.moved(spec.name, range: claim.range, lastKey: upper)
            cost.record(walBefore: claim.walPosition, reading: results[results.count - 2])
            let waited = waiters.isEmpty ? Waiters(count: 0, longestMs: 0) : Waiters(results[results.count - 3].rows.first)
            return .committed(rows: changed.rows, walked: walked, lastKey: upper, range: claim.range, waiters: waited)
        } catch let error as PostgresError where Self.isRangeCheck(error) {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw RangeViolation(range: batchStart.range ?? 0, lower: batchStart.key, upper: [], keys: kind.size, rows: nil, outside: nil)
        } catch {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// The checkpoint's check constraint refused a batch that changed rows outside its range.
    private static func isRangeCheck(_ error: PostgresError) -> Bool {
        error.code == "23514" && error.message.contains("ranges_batch_within_range")
    }

    /// A part of one key failed with a data error (rolled back to its savepoint): records the
    /// key in the store and moves the checkpoint past it, in the same transaction, then commits.
    /// One bad row more than `on_error.max_rows` rolls everything back and stops the job.
    private func quarantine(_ key: [String], error: PostgresError, claim: RangeClaim, db: Connection) throws -> BatchResult {
        batchWrite = nil
        try db.execute("ROLLBACK TO SAVEPOINT backfill_part")
        let total = try store.quarantine(spec.name, range: claim.range, key: key, error: error, worker: name, db: db)
        if total > Int64(spec.onError.maxRows) {
            try db.execute("ROLLBACK")
            throw BadRowLimit(failure: RunFailure(
                sqlstate: error.code.raw, range: claim.range, afterKey: claim.lower, key: key,
                message: "more than on_error.max_rows (\(spec.onError.maxRows)) bad rows: \(error.message) (this row was not recorded and nothing after the checkpoint was committed; \(total - 1) bad rows are quarantined: `backfill bad-rows \(spec.name)` lists them)",
                detail: error.detail, hint: error.hint))
        }
        let moved = store.checkpoint(spec.name, range: claim.range, lastKey: key, keys: 1, worker: name, rows: "0", outside: "0", first: 1)
        _ = try db.pipeline((moved.map { [$0] } ?? []) + [Connection.Statement(store.closing)])
        store.moved(spec.name, range: claim.range, lastKey: key)
        return .quarantined(key: key, error: error, range: claim.range, badRows: total)
    }

    /// Finds where to split the first part of a bisection: the key `offset` keys past the first
    /// one after `lower`, at most `upper`, read from the key's index in a transaction of its own
    /// (with the session pins, so that the key's text form reads back as the same value).
    private func splitPoint(range: Int, lower: [String]?, upper: [String], offset: Int) throws -> WorkerMachine.Event {
        let db = try db()
        let found = try db.transaction { db in
            try db.execute(SessionPins.statements)
            return try db.query(plan.statements.upperBound(afterKey: lower != nil, belowCeiling: true),
                                (lower ?? []).map(PostgresValue.text) + upper.map(PostgresValue.text) + [.int(Int64(max(offset, 0)))])
                .first.map(plan.statements.upperKey)
        }
        return .splitFound(key: found?.key, walked: found?.walked ?? 0)
    }

    /// `on_error: stop`: finds the first key of the failed batch whose row cannot be written. The
    /// batch is bisected in one transaction, each part under a savepoint (kept when it worked,
    /// so that a row that fails only next to the rows before it, a unique violation, is found
    /// too), and the transaction is rolled back: nothing is committed. Nil when no single key
    /// fails on its own or the search itself failed; the job then stops with the batch's error.
    private func findBadKey(_ start: Bisection) -> [String]? {
        guard let db = connection else { return nil }
        var search = start
        do {
            defer { if db.isOpen { try? db.execute("ROLLBACK") } }
            return try inFlight(db) { () throws -> [String]? in
                _ = try db.pipeline(opening)
                if let pid = try db.pipeline([.init("SET CONSTRAINTS ALL IMMEDIATE"), .init("SELECT pg_backend_pid() AS pid")]).last?.rows.first?["pid"].int {
                    context.watchdog?.runsOn(index, pid: Int32(pid))
                }
                while true {
                    switch search.step {
                    case .finished:
                        return nil
                    case .split(let lower, let upper, let offset):
                        let found = try db.query(plan.statements.upperBound(afterKey: lower != nil, belowCeiling: true),
                                                 (lower ?? []).map(PostgresValue.text) + upper.map(PostgresValue.text) + [.int(Int64(max(offset, 0)))])
                            .first.map(plan.statements.upperKey)
                        search.split(at: found?.key, walked: found?.walked ?? 0)
                    case .attempt(let lower, let upper, _):
                        try db.execute("SAVEPOINT backfill_probe")
                        do {
                            _ = try db.query(lower == nil ? plan.statements.batchFromStart : plan.statements.batch,
                                             ((lower ?? []) + upper).map(PostgresValue.text))
                            try db.execute("RELEASE SAVEPOINT backfill_probe")
                            search.written()
                        } catch let error as PostgresError where Bisection.isolates(error) {
                            try db.execute("ROLLBACK TO SAVEPOINT backfill_probe")
                            if let key = search.failed() { return key }
                        }
                    }
                }
            }
        } catch {
            return nil
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
            context.stop.setInFlight(db.makeCancelToken(), worker: index)  // a stop cancels a hanging check_sql
            defer { context.stop.setInFlight(nil, worker: index) }
            guard var (reason, detail) = try gate.check(at: context.elapsed, db: db) else { return .success(nil) }
            let since = context.elapsed
            try store.setThrottle(spec.name, reason: reason.rawValue, detail: detail, db: db)
            event(.throttle(.init(cause: .waiting(reason, detail: detail), worker: index)))
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
                    event(.throttle(.init(cause: .waiting(reason, detail: detail), worker: index)))
                }
            }
            try store.setThrottle(spec.name, reason: nil, db: db)
            event(.throttle(.init(cause: .resumed(reason, waited: .seconds(context.elapsed - since)), worker: index)))
            return .success(nil)
        } catch let error as PostgresError {
            return .failure(error)
        } catch {
            return .failure(PostgresError(code: .clientError, severity: "CLIENT", message: "\(error)"))
        }
    }

    /// Connects; when the role's, the database's or the server's connection limit leaves no slot,
    /// waits for one (polling every second, said once in a `connections` event) as long as
    /// another worker goes on, the run is not stopping and no worker found the walk done, and for
    /// `retry.reconnect_timeout_ms` when this worker is the only one. Nil when the wait ended
    /// because the run stops or the walk is done.
    private func connectForSlot() throws -> Connection? {
        var since: ContinuousClock.Instant?
        while true {
            do {
                let db = try Self.connect(context)
                try setUpOrigin(db)
                context.workerConnection(true)
                if since != nil { event(.connections(.init(state: .connected, message: "worker \(index) got a connection slot", worker: index))) }
                return db
            } catch let error as PostgresError where error.code == .tooManyConnections {
                let wait = context.slotWait
                if context.shouldStop || wait.walkDone { return nil }
                let began = since ?? .now
                if !wait.othersConnected, (ContinuousClock.now - began).milliseconds >= Double(spec.retry.reconnectTimeoutMs) { throw error }
                if since == nil {
                    event(.connections(.init(state: .waiting, message: "worker \(index) waits for a connection slot: \(error.message)", worker: index)))
                }
                since = began
                sleep(ms: 1000)
            }
        }
    }

    /// With `cdc.origin` (not in a dry run, which commits nothing): marks everything the new
    /// session commits with the job's replication origin (`ChangeCapture`), or closes it.
    private func setUpOrigin(_ db: Connection) throws {
        guard let origin = spec.cdc.origin, !context.options.dryRun else { return }
        do {
            let name = try ChangeCapture.setUpOrigin(origin, db: db)
            event(.cdc(.origin(name, worker: index)))
        } catch {
            db.close()
            throw error
        }
    }

    /// Opens a new connection after a lost one.
    private func reconnect() -> WorkerMachine.Event {
        if connection != nil { context.workerConnection(false) }
        connection?.close()
        connection = nil
        do {
            guard let fresh = try connectForSlot() else {
                return .reconnectFailed(PostgresError(code: .tooManyConnections, severity: "CLIENT", message: "no connection slot: the run is stopping"))
            }
            connection = fresh
            return .reconnected
        } catch let error as PostgresError {
            lastFailure = (error, 0)  // the machine's retry note reports it, once
            return .reconnectFailed(error)
        } catch {
            return .reconnectFailed(PostgresError(code: .connectionFailure, severity: "CLIENT", message: "\(error)"))
        }
    }

    private func sleep(ms: Int) { context.sleep(ms: ms) }
}

/// One bad row more than `on_error.max_rows`: the job stops (exit 1).
struct BadRowLimit: Error {
    var failure: RunFailure
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

    var description: String {
        let from = lower.map { "(" + $0.joined(separator: ", ") + ")" } ?? "the start"
        guard let rows, let outside else {
            return "batch in range \(range) after key \(from) (at most \(keys) keys) changed rows outside its key range, so its checkpoint's check constraint (ranges_batch_within_range) refused it; it was rolled back and the job stopped: the job's `where` or `set` reaches beyond its place, check them with `backfill plan`"
        }
        if stuck {
            return "batch in range \(range) after key \(from) found the same key as its upper bound: the walk would not move (a key whose text form does not read back as the same value?); it was rolled back and the job stopped"
        }
        return "batch in range \(range) over keys after \(from) up to (\(upper.joined(separator: ", "))) walked \(keys) keys but changed \(rows) rows, \(outside) of them outside its key range; it was rolled back and the job stopped: the job's `where` or `set` reaches beyond its place, check them with `backfill plan`"
    }
}
