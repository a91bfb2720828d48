import Foundation
import PostgresClient

/// How a run ended; the CLI maps it to an exit code.
public enum RunOutcome: Sendable {
    /// Every key walked (and, where the job has `where`, no row still matches it).
    case done(RunSummary)
    /// Stopped before done; run again to resume.
    case stopped(StopReason, RunSummary)
    /// A permanent error, or the retries ran out; committed batches stay.
    case failed(String, RunSummary)
    /// Another runner holds the job's lease.
    case held(LeaseHolder)
    /// The job file or a database object is not right; nothing changed.
    case invalid(JobFileError)

    /// The contract's exit code: 0 done, 1 failed, 2 invalid, 3 stopped, 4 held.
    public var exitCode: Int32 {
        switch self {
        case .done: 0
        case .failed: 1
        case .invalid: 2
        case .stopped: 3
        case .held: 4
        }
    }
}

/// Options of one run that do not come from the job file.
public struct RunOptions: Sendable {
    /// Connection string or URL; nil uses libpq's defaults.
    public var database: String?
    public var store = CheckpointStore()
    /// Stop after the batch in flight once this many seconds have passed.
    public var maxRuntime: Double?
    /// Discard an existing checkpoint (also one made by a different spec) and start over.
    public var restart = false
    /// Skip the lease, to add workers to a job another process runs.
    public var join = false
    /// Roll every batch back instead of committing it (staging rehearsal of a database that must
    /// not change). Locks are real, writes are not kept; nothing is written to the checkpoint
    /// store, the lease is not taken, and the walk's position is kept in memory.
    public var dryRun = false

    public init(database: String? = nil) { self.database = database }
}

/// Runs one job: plans it, takes the lease, and walks the key in batches until done, stopped or
/// failed. Blocking: call it from a thread of its own, not from the cooperative pool.
public final class Runner {
    let spec: JobSpec
    let options: RunOptions
    let stop: StopSignal
    let emit: (RunEvent) -> Void
    private var db: Connection!
    private var lease: Lease?
    private var summary: RunSummary
    private let started = ContinuousClock.now
    private let runnerName = "\(ProcessInfo.processInfo.hostName):\(getpid())"
    private let range = 0
    private var dryRunKey: [String]?

    public init(spec: JobSpec, options: RunOptions, stop: StopSignal = StopSignal(), emit: @escaping (RunEvent) -> Void = { _ in }) {
        self.spec = spec
        self.options = options
        self.stop = stop
        self.emit = emit
        self.summary = RunSummary(job: spec.name, state: .running)
    }

    private var applicationName: String { "backfill:\(spec.name)" }

    private func event(_ kind: RunEvent.Kind, _ fields: [(String, RunEvent.Value)] = []) {
        emit(RunEvent(kind, job: spec.name, fields))
    }

    private var elapsed: Double {
        let d = ContinuousClock.now - started
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Runs the job to an outcome. Never throws: every failure becomes an outcome.
    public func run() -> RunOutcome {
        let outcome: RunOutcome
        do {
            outcome = try runChecked()
        } catch let error as JobFileError {
            outcome = .invalid(error)
        } catch let error as PostgresError {
            outcome = fail("\(error)")
        } catch {
            outcome = fail("\(error)")
        }
        switch outcome {
        case .done(let s): event(.done, s.fields)
        case .stopped(let reason, let s): event(.stop, [("reason", .string(reason.rawValue))] + s.fields)
        case .failed(let message, _): event(.error, [("message", .string(message))])
        case .held, .invalid: break
        }
        return outcome
    }

    private func fail(_ message: String, sqlstate: String? = nil) -> RunOutcome {
        summary.state = .failed
        summary.seconds = elapsed
        if let db, db.isOpen, !options.dryRun { try? options.store.finish(spec.name, state: .failed, error: message, db: db) }
        return .failed(message, summary)
    }

    private func runChecked() throws -> RunOutcome {
        db = try Connection(options.database, applicationName: applicationName)
        let store = options.store
        let plan = try Planner.plan(spec, on: db)
        if options.dryRun {
            event(.start, try startFields(plan, rowsBefore: 0) + [("dry_run", .bool(true))])
            return try loop(plan)
        }
        try store.migrate(db)
        if !options.join {
            switch try Lease.acquire(job: spec.name, conninfo: options.database, store: store) {
            case .success(let lease): self.lease = lease
            case .failure(let holder): return .held(holder)
            }
        }
        switch try store.prepare(spec, restart: options.restart, db: db) {
        case .ready: break
        case .alreadyDone:
            summary.state = .done
            return .done(summary)
        case .notRunnable(let state, _):
            summary.state = state
            return .stopped(state == .paused ? .paused : .cancelled, summary)
        case .specChanged:
            throw JobFileError(
                file: spec.file, field: nil,
                problem: "job `\(spec.name)` has a checkpoint made by a different version of this file (its table, key, where, set, sql or action changed)",
                fix: "run with --restart to discard the checkpoint and start over from the first key, or give the changed job a new `name`")
        }
        try store.markRunning(spec.name, runner: runnerName, db: db)
        let before = try store.status(job: spec.name, db: db).first?.rowsDone ?? 0
        event(.start, try startFields(plan, rowsBefore: before))
        return try loop(plan)
    }

    /// The `start` event's fields, with the key's numeric bounds when the first key column has
    /// them (read from the index's two ends), for progress and ETA.
    private func startFields(_ plan: JobPlan, rowsBefore: Int64) throws -> [(String, RunEvent.Value)] {
        var fields: [(String, RunEvent.Value)] = [
            ("table", .string(spec.table)), ("action", .string(spec.action.name)),
            ("rows_estimate", plan.estimatedRows.map { .int($0) } ?? .null), ("rows_done_before", .int(rowsBefore)),
            ("batch_size", .int(Int64(spec.batch.size))), ("key_index", .string(plan.keyIndex)),
            ("runner", .string(runnerName)),
        ]
        if let bounds = try plan.statements.numericKeyBounds.flatMap({ try db.query($0).first }),
           let lo = bounds["lo"].double, let hi = bounds["hi"].double {
            fields += [("key_min", .double(lo)), ("key_max", .double(hi))]
        }
        return fields
    }

    private enum BatchResult {
        case committed(rows: Int64, lastKey: [String], waiters: Waiters)
        case rangeDone
        case busy
        case jobState(JobState)
    }

    private func loop(_ plan: JobPlan) throws -> RunOutcome {
        var sizer = BatchSizer(initial: spec.batch.size, min: spec.batch.min, max: spec.batch.max, targetMs: spec.batch.targetMs)
        var limiter = RateLimiter(rowsPerSecond: spec.throttle.maxRowsPerSecond)
        let policy = RetryPolicy(spec.retry)
        var gate = HealthGate(throttle: spec.throttle, tableOID: plan.tableOID)
        var attempt = 1
        while true {
            if stop.isRequested { return stopped(.signal) }
            if let max = options.maxRuntime, elapsed >= max { return stopped(.timeBox) }
            let size = sizer.size
            let began = ContinuousClock.now
            let result: BatchResult
            do {
                if gate.isDue(at: elapsed), let outcome = try waitUntilHealthy(&gate) { return outcome }
                stop.setInFlight(db.makeCancelToken())
                defer { stop.setInFlight(nil) }
                result = try batch(plan, size: size)
            } catch let error as PostgresError {
                if stop.isRequested && (error.code == .queryCanceled || error.isConnectionLost) { return stopped(.signal) }
                switch policy.decide(error, attempt: attempt, random: Double.random(in: 0..<1)) {
                case .fail(let exhausted):
                    let message = "batch after key \(summary.lastKeyText) failed\(exhausted ? " \(attempt) times, giving up" : ""): SQLSTATE \(error.code) \(error.message)"
                        + (error.detail.map { " (\($0))" } ?? "")
                    return fail(message)
                case .retry(let reason, let delayMs, let halve, let reconnect):
                    summary.retries[reason, default: 0] += 1
                    if halve { sizer.halve() }
                    event(.retry, [("reason", .string(reason.rawValue)), ("attempt", .int(Int64(attempt))),
                                   ("duration_ms", .double((ContinuousClock.now - began).milliseconds)),
                                   ("delay_ms", .int(Int64(delayMs))), ("batch_size", .int(Int64(sizer.size))),
                                   ("sqlstate", .string(error.code.raw)), ("message", .string(error.message))])
                    attempt += 1
                    sleep(ms: delayMs)
                    if reconnect {
                        if let outcome = try self.reconnect() { return outcome }
                    }
                    continue
                }
            }
            let durationMs = (ContinuousClock.now - began).milliseconds
            switch result {
            case .committed(let rows, let lastKey, let waiters):
                summary.rows += rows
                summary.batches += 1
                summary.batchMs.append(durationMs)
                summary.lastKey = lastKey
                sizer.record(keys: size, durationMs: durationMs)
                event(.batch, [("rows", .int(rows)), ("batch_size", .int(Int64(size))), ("duration_ms", .double(durationMs)),
                               ("attempt", .int(Int64(attempt))), ("last_key", .strings(lastKey)),
                               ("rows_done", .int(summary.rows)), ("next_batch_size", .int(Int64(sizer.size)))])
                attempt = 1
                var restMs = Double(spec.batch.pauseMs)
                if spec.throttle.whenBlocking && waiters.count > 0 && waiters.longestMs >= Double(spec.throttle.blockingWaitMs ?? spec.batch.targetMs) {
                    // Live traffic waited on this batch's locks longer than allowed: halve the
                    // batch, and rest so that the waiters get through.
                    sizer.shrink(by: 0.5)
                    let rest = max(durationMs, Double(spec.batch.targetMs))
                    summary.throttledSeconds["blocking", default: 0] += rest / 1000
                    event(.throttle, [("reason", .string("blocking")), ("waiters", .int(Int64(waiters.count))),
                                      ("longest_wait_ms", .double(waiters.longestMs)),
                                      ("wait_ms", .double(rest)), ("batch_size", .int(Int64(sizer.size)))])
                    restMs = max(restMs, rest)
                }
                let wait = limiter.consume(rows: Int(rows), now: elapsed) * 1000
                if wait > 0 {
                    summary.throttledSeconds["max_rows_per_second", default: 0] += wait / 1000
                    event(.throttle, [("reason", .string("max_rows_per_second")), ("wait_ms", .double(wait))])
                    restMs = max(restMs, wait)
                }
                if restMs > 0 { sleep(ms: Int(restMs)) }
            case .rangeDone:
                return try finishDone()
            case .busy:
                sleep(ms: 200)
            case .jobState(let state):
                summary.state = state
                summary.seconds = elapsed
                event(.stop, [("reason", .string(state.rawValue))])
                return .stopped(state == .cancelled ? .cancelled : .paused, summary)
            }
        }
    }

    /// One batch transaction: claim the range, find the upper key, run the batch, move the
    /// checkpoint, commit.
    private func batch(_ plan: JobPlan, size: Int) throws -> BatchResult {
        let store = options.store
        try db.execute("BEGIN; SET LOCAL lock_timeout = '\(spec.timeouts.lockMs)ms'; SET LOCAL statement_timeout = '\(spec.timeouts.statementMs)ms'")
        do {
            if options.dryRun { return try dryRunBatch(plan, size: size) }
            guard let claim = try store.claim(spec.name, range: range, db: db) else {
                try db.execute("ROLLBACK")
                return .busy
            }
            if claim.jobState == .paused || claim.jobState == .cancelled {
                try db.execute("ROLLBACK")
                return .jobState(claim.jobState)
            }
            if claim.done {
                try db.execute("ROLLBACK")
                return .rangeDone
            }
            let last = claim.lastKey.map { $0.map(PostgresValue.text) }
            let offset = PostgresValue.int(Int64(size - 1))
            let upperRow = try db.query(
                last == nil ? plan.statements.upperBoundFromStart : plan.statements.upperBound,
                (last ?? []) + [offset]).first
            guard let upperRow else {
                try store.completeRange(spec.name, range: range, db: db)
                try db.execute("COMMIT")
                return .rangeDone
            }
            let upper = upperRow.cells.map { $0.string ?? "" }
            let rows = try db.query(
                last == nil ? plan.statements.batchFromStart : plan.statements.batch,
                (last ?? []) + upper.map(PostgresValue.text)
            ).affectedRows
            let waiters = try store.advance(spec.name, range: range, lastKey: upper, rows: rows, countWaiters: spec.throttle.whenBlocking, db: db)
            try db.execute("COMMIT")
            return .committed(rows: rows, lastKey: upper, waiters: waiters)
        } catch {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// A rehearsal batch: the same statements and locks, then ROLLBACK; the position stays in memory.
    private func dryRunBatch(_ plan: JobPlan, size: Int) throws -> BatchResult {
        let last = dryRunKey.map { $0.map(PostgresValue.text) }
        let upperRow = try db.query(
            last == nil ? plan.statements.upperBoundFromStart : plan.statements.upperBound,
            (last ?? []) + [.int(Int64(size - 1))]).first
        guard let upperRow else {
            try db.execute("ROLLBACK")
            return .rangeDone
        }
        let upper = upperRow.cells.map { $0.string ?? "" }
        let rows = try db.query(
            last == nil ? plan.statements.batchFromStart : plan.statements.batch, (last ?? []) + upper.map(PostgresValue.text)
        ).affectedRows
        let waiters = Waiters(spec.throttle.whenBlocking ? try db.query("SELECT \(CheckpointStore.waitersExpression)").first : nil)
        try db.execute("ROLLBACK")
        dryRunKey = upper
        return .committed(rows: rows, lastKey: upper, waiters: waiters)
    }

    /// Waits while a health throttle says so (replica lag, `check_sql`, autovacuum), holding no
    /// locks, re-checking every second; a stop, the time box, or a pause or cancel ends the wait.
    private func waitUntilHealthy(_ gate: inout HealthGate) throws -> RunOutcome? {
        guard var (reason, detail) = try gate.check(at: elapsed, db: db) else { return nil }
        let store = options.store
        let since = elapsed
        try store.setThrottle(spec.name, reason: reason.rawValue, db: db)
        event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
        defer { summary.throttledSeconds[reason.rawValue, default: 0] += elapsed - since }
        while true {
            sleep(ms: Int(gate.interval * 1000))
            if stop.isRequested { return stopped(.signal) }
            if let max = options.maxRuntime, elapsed >= max { return stopped(.timeBox) }
            if let state = try store.state(spec.name, db: db), state == .paused || state == .cancelled {
                summary.state = state
                summary.seconds = elapsed
                try store.setThrottle(spec.name, reason: nil, db: db)
                return .stopped(state == .paused ? .paused : .cancelled, summary)
            }
            guard let next = try gate.check(at: elapsed, db: db) else { break }
            if next.0 != reason {
                (reason, detail) = next
                try store.setThrottle(spec.name, reason: reason.rawValue, db: db)
                event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
            }
        }
        try store.setThrottle(spec.name, reason: nil, db: db)
        event(.throttle, [("reason", .string(reason.rawValue)), ("state", .string("resumed")), ("wait_ms", .double((elapsed - since) * 1000))])
        return nil
    }

    private func stopped(_ reason: StopReason) -> RunOutcome {
        summary.state = .pending
        summary.seconds = elapsed
        if db.isOpen && !options.dryRun { try? options.store.finish(spec.name, state: .pending, db: db) }
        return .stopped(reason, summary)
    }

    private func finishDone() throws -> RunOutcome {
        summary.seconds = elapsed
        summary.state = .done
        if options.dryRun { return .done(summary) }
        try options.store.finish(spec.name, state: .done, db: db)
        if let sql = BatchStatements.remainingCount(spec: spec), !isSQLAction {
            let remaining = try db.query(sql, [.int(1000)]).first?["n"].int64 ?? 0
            if remaining > 0 {
                let message = "walked every key, but \(remaining >= 1000 ? "at least 1000" : String(remaining)) rows still match `where`; a `set` that leaves rows matching, or rows changed behind the checkpoint, cause this; check with `backfill verify`, then rerun with --restart"
                try? options.store.finish(spec.name, state: .failed, error: message, db: db)
                summary.state = .failed
                return .failed(message, summary)
            }
        }
        return .done(summary)
    }

    private var isSQLAction: Bool {
        if case .sql = spec.action { return true }
        return false
    }

    /// After a lost connection: connect again with backoff until `retry.reconnect_timeout_ms`,
    /// and take the lease again. Returns an outcome when the run cannot go on.
    private func reconnect() throws -> RunOutcome? {
        let deadline = elapsed + Double(spec.retry.reconnectTimeoutMs) / 1000
        var tries = 1
        while true {
            if stop.isRequested { return stopped(.signal) }
            do {
                db = try Connection(options.database, applicationName: applicationName)
                break
            } catch let error as PostgresError where error.code == .sqlclientUnableToEstablishSqlconnection || error.isConnectionLost {
                guard elapsed < deadline else {
                    return fail("lost the connection and could not reconnect within \(spec.retry.reconnectTimeoutMs) ms: \(error.message)")
                }
                event(.retry, [("reason", .string(RetryReason.connectionLost.rawValue)), ("attempt", .int(Int64(tries))),
                               ("message", .string("reconnecting: \(error.message)"))])
                sleep(ms: RetryPolicy(spec.retry).delay(attempt: tries, random: Double.random(in: 0.5..<1)))
                tries += 1
            }
        }
        if let lease, !lease.isHeld {
            self.lease = nil
            switch try Lease.acquire(job: spec.name, conninfo: options.database, store: options.store) {
            case .success(let renewed): self.lease = renewed
            case .failure(let holder): return .held(holder)
            }
        }
        return nil
    }

    /// Sleeps in short slices so that a stop request is honoured quickly.
    private func sleep(ms: Int) {
        var left = ms
        while left > 0 && !stop.isRequested {
            let slice = min(left, 50)
            usleep(useconds_t(slice * 1000))
            left -= slice
        }
    }
}

extension RunSummary {
    var lastKeyText: String { lastKey.map { "(" + $0.joined(separator: ", ") + ")" } ?? "(start)" }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
