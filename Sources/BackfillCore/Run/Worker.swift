import Foundation
import PostgresClient

/// One worker of a run: its own connection, batch sizer and health checks, walking whichever
/// range it claims in each batch transaction until no range is left open.
final class Worker {
    private let context: RunContext
    private let index: Int
    private let name: String
    private var db: Connection!
    private var spec: JobSpec { context.spec }
    private var options: RunOptions { context.options }
    private var plan: JobPlan { context.plan }
    /// The range this worker walked last; it claims it first again.
    private var preferred: Int?
    /// Dry runs keep their place here, since nothing is written to the store.
    private var dryRunKey: [String]?
    private var rowsDone: Int64 = 0
    private var lastHeartbeat = -Double.infinity

    init(context: RunContext, index: Int) {
        self.context = context
        self.index = index
        self.name = "\(context.runnerName):w\(index)"
    }

    private func event(_ kind: RunEvent.Kind, _ fields: [(String, RunEvent.Value)]) {
        context.event(kind, fields + [("worker", .int(Int64(index)))])
    }

    private enum BatchResult {
        case committed(rows: Int64, lastKey: [String], range: Int, waiters: Waiters)
        case rangeDone
        case busy
        case jobState(JobState)
    }

    func run() -> WorkerResult {
        do {
            db = try Connection(options.database, applicationName: context.applicationName)
            return try loop()
        } catch {
            return .failed("worker \(index): \(error)")
        }
    }

    private func loop() throws -> WorkerResult {
        var sizer = BatchSizer(initial: spec.batch.size, min: spec.batch.min, max: spec.batch.max, targetMs: spec.batch.targetMs)
        let policy = RetryPolicy(spec.retry)
        var gate = HealthGate(throttle: spec.throttle, tableOID: plan.tableOID)
        var attempt = 1
        while true {
            if context.shouldStop { return .stopped(.signal) }
            if let max = options.maxRuntime, context.elapsed >= max { return .stopped(.timeBox) }
            let rest = context.sharedRest
            if rest > .zero { sleep(ms: Int(rest.milliseconds)) }
            let size = sizer.size
            var began = ContinuousClock.now
            do {
                if gate.isDue(at: context.elapsed), let outcome = try waitUntilHealthy(&gate) { return outcome }
                heartbeat()
                context.stop.setInFlight(db.makeCancelToken(), worker: index)
                began = ContinuousClock.now
                let result = try batch(size: size)
                context.stop.setInFlight(nil, worker: index)
                let durationMs = (ContinuousClock.now - began).milliseconds
                switch result {
                case .committed(let rows, let lastKey, let range, let waiters):
                    rowsDone += rows
                    let total = context.addBatch(rows: rows, ms: durationMs, lastKey: lastKey)
                    sizer.record(keys: size, durationMs: durationMs)
                    event(.batch, [("rows", .int(rows)), ("batch_size", .int(Int64(size))), ("duration_ms", .double(durationMs)),
                                   ("attempt", .int(Int64(attempt))), ("last_key", .strings(lastKey)), ("range", .int(Int64(range))),
                                   ("rows_done", .int(total.job)), ("run_rows", .int(total.run)), ("next_batch_size", .int(Int64(sizer.size)))])
                    attempt = 1
                    try restAfterBatch(rows: rows, durationMs: durationMs, waiters: waiters, sizer: &sizer)
                case .rangeDone:
                    preferred = nil
                    if options.dryRun { return .done }
                case .busy:
                    if options.dryRun { return .done }
                    if try options.store.openRanges(spec.name, db: db) == 0 { return .done }
                    // Every open range is in another worker's batch right now: split the largest.
                    if try !options.store.splitLargestRange(spec.name, plan: plan, minimumRows: Int64(max(4 * spec.batch.min, 1000)), db: db) {
                        sleep(ms: 100)
                    }
                case .jobState(let state):
                    return .stopped(state == .cancelled ? .cancelled : .paused)
                }
            } catch let error as PostgresError {
                // Nothing is retried blindly: every iteration starts again from the committed
                // checkpoint, so trying again after any failure never applies a batch twice.
                context.stop.setInFlight(nil, worker: index)
                if context.shouldStop && (error.code == .queryCanceled || error.isConnectionLost) { return .stopped(.signal) }
                switch policy.decide(error, attempt: attempt, random: Double.random(in: 0..<1)) {
                case .fail(let exhausted):
                    let position = preferred.map { "range \($0)" } ?? "the first range"
                    return .failed(
                        "batch in \(position) after key \(context.summary(state: .running).lastKeyText) failed\(exhausted ? " \(attempt) times, giving up" : ""): SQLSTATE \(error.code) \(error.message)"
                            + (error.detail.map { " (\($0))" } ?? ""))
                case .retry(let reason, let delayMs, let halve, let reconnect):
                    context.addRetry(reason)
                    if halve { sizer.halve() }
                    event(.retry, [("reason", .string(reason.rawValue)), ("attempt", .int(Int64(attempt))),
                                   ("duration_ms", .double((ContinuousClock.now - began).milliseconds)),
                                   ("delay_ms", .int(Int64(delayMs))), ("batch_size", .int(Int64(sizer.size))),
                                   ("sqlstate", .string(error.code.raw)), ("message", .string(error.message))])
                    attempt += 1
                    sleep(ms: delayMs)
                    if reconnect, let outcome = try self.reconnect() { return outcome }
                }
            }
        }
    }

    /// After a committed batch: back off when live traffic waited on it, keep the job's rate
    /// budget, and rest `batch.pause_ms`.
    private func restAfterBatch(rows: Int64, durationMs: Double, waiters: Waiters, sizer: inout BatchSizer) throws {
        var restMs = Double(spec.batch.pauseMs)
        if spec.throttle.whenBlocking && waiters.count > 0 && waiters.longestMs >= Double(spec.throttle.blockingWaitMs ?? spec.batch.targetMs) {
            // Live traffic waited on this batch's locks longer than allowed: halve the batch, and
            // rest (every worker of this process) so that the waiters get through.
            sizer.shrink(by: 0.5)
            let pause = max(durationMs, Double(spec.batch.targetMs))
            context.restAll(until: .now + .milliseconds(Int64(pause)))
            context.addThrottle("blocking", seconds: pause / 1000)
            event(.throttle, [("reason", .string("blocking")), ("waiters", .int(Int64(waiters.count))),
                              ("longest_wait_ms", .double(waiters.longestMs)),
                              ("wait_ms", .double(pause)), ("batch_size", .int(Int64(sizer.size)))])
            restMs = max(restMs, pause)
        }
        if spec.throttle.maxRowsPerSecond > 0 {
            let wait = 1000 * (options.dryRun
                ? context.consumeLocally(rows: rows)
                : try options.store.consumeRate(spec.name, rows: rows, rowsPerSecond: spec.throttle.maxRowsPerSecond, db: db))
            if wait > 0 {
                context.addThrottle("max_rows_per_second", seconds: wait / 1000)
                event(.throttle, [("reason", .string("max_rows_per_second")), ("wait_ms", .double(wait))])
                restMs = max(restMs, wait)
            }
        }
        if restMs > 0 { sleep(ms: Int(restMs)) }
    }

    /// One batch transaction: claim a range, find the upper key, run the batch, move the
    /// range's checkpoint, commit.
    private func batch(size: Int) throws -> BatchResult {
        let store = options.store
        try db.execute("BEGIN; SET LOCAL lock_timeout = '\(spec.timeouts.lockMs)ms'; SET LOCAL statement_timeout = '\(spec.timeouts.statementMs)ms'")
        do {
            let claim: RangeClaim
            if options.dryRun {
                claim = RangeClaim(range: 0, lower: dryRunKey, ceiling: nil, jobState: .running)
            } else {
                guard let claimed = try store.claim(spec.name, preferring: preferred, db: db) else {
                    try db.execute("ROLLBACK")
                    return .busy
                }
                claim = claimed
            }
            if claim.jobState == .paused || claim.jobState == .cancelled {
                try db.execute("ROLLBACK")
                return .jobState(claim.jobState)
            }
            preferred = claim.range
            let lower = claim.lower.map { $0.map(PostgresValue.text) } ?? []
            let ceiling = claim.ceiling.map { $0.map(PostgresValue.text) } ?? []
            let upperRow = try db.query(
                plan.statements.upperBound(afterKey: claim.lower != nil, belowCeiling: claim.ceiling != nil),
                lower + ceiling + [.int(Int64(size - 1))]).first
            guard let upperRow else {
                if options.dryRun {
                    try db.execute("ROLLBACK")
                } else {
                    try store.completeRange(spec.name, range: claim.range, db: db)
                    try db.execute("COMMIT")
                }
                return .rangeDone
            }
            let upper = upperRow.cells.map { $0.string ?? "" }
            let rows = try db.query(
                claim.lower == nil ? plan.statements.batchFromStart : plan.statements.batch, lower + upper.map(PostgresValue.text)
            ).affectedRows
            let waiters: Waiters
            if options.dryRun {
                waiters = Waiters(spec.throttle.whenBlocking ? try db.query(CheckpointStore.waitersQuery).first : nil)
                try db.execute("ROLLBACK")
                dryRunKey = upper
            } else {
                waiters = try store.advance(spec.name, range: claim.range, lastKey: upper, rows: rows, worker: name, countWaiters: spec.throttle.whenBlocking, db: db)
                try db.execute("COMMIT")
            }
            return .committed(rows: rows, lastKey: upper, range: claim.range, waiters: waiters)
        } catch {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// Records this worker's progress for `status`, every 2 s at most, outside batches.
    private func heartbeat() {
        guard !options.dryRun, context.elapsed - lastHeartbeat >= 2 else { return }
        lastHeartbeat = context.elapsed
        let rate = context.elapsed > 0 ? Double(rowsDone) / context.elapsed : 0
        try? options.store.heartbeat(spec.name, worker: name, range: preferred, rowsDone: rowsDone, rowsPerSecond: rate, db: db)
    }

    /// Waits while a health throttle says so (replica lag, `check_sql`, autovacuum), holding no
    /// locks, re-checking every second; a stop, the time box, or a pause or cancel ends the wait.
    private func waitUntilHealthy(_ gate: inout HealthGate) throws -> WorkerResult? {
        guard var (reason, detail) = try gate.check(at: context.elapsed, db: db) else { return nil }
        let store = options.store
        let since = context.elapsed
        if !options.dryRun { try store.setThrottle(spec.name, reason: reason.rawValue, db: db) }
        event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
        defer { context.addThrottle(reason.rawValue, seconds: context.elapsed - since) }
        while true {
            sleep(ms: Int(gate.interval * 1000))
            if context.shouldStop { return .stopped(.signal) }
            if let max = options.maxRuntime, context.elapsed >= max { return .stopped(.timeBox) }
            if !options.dryRun, let state = try store.state(spec.name, db: db), state == .paused || state == .cancelled {
                try store.setThrottle(spec.name, reason: nil, db: db)
                return .stopped(state == .paused ? .paused : .cancelled)
            }
            guard let next = try gate.check(at: context.elapsed, db: db) else { break }
            if next.0 != reason {
                (reason, detail) = next
                if !options.dryRun { try store.setThrottle(spec.name, reason: reason.rawValue, db: db) }
                event(.throttle, [("reason", .string(reason.rawValue)), ("detail", .string(detail)), ("state", .string("waiting"))])
            }
        }
        if !options.dryRun { try store.setThrottle(spec.name, reason: nil, db: db) }
        event(.throttle, [("reason", .string(reason.rawValue)), ("state", .string("resumed")), ("wait_ms", .double((context.elapsed - since) * 1000))])
        return nil
    }

    /// After a lost connection: connect again with backoff until `retry.reconnect_timeout_ms`,
    /// and take the lease again. Returns a result when the worker cannot go on.
    private func reconnect() throws -> WorkerResult? {
        let deadline = context.elapsed + Double(spec.retry.reconnectTimeoutMs) / 1000
        var tries = 1
        while true {
            if context.shouldStop { return .stopped(.signal) }
            do {
                db = try Connection(options.database, applicationName: context.applicationName)
                break
            } catch let error as PostgresError where error.code == .sqlclientUnableToEstablishSqlconnection || error.isConnectionLost {
                guard context.elapsed < deadline else {
                    return .failed("lost the connection and could not reconnect within \(spec.retry.reconnectTimeoutMs) ms: \(error.message)")
                }
                event(.retry, [("reason", .string(RetryReason.connectionLost.rawValue)), ("attempt", .int(Int64(tries))),
                               ("message", .string("reconnecting: \(error.message)"))])
                sleep(ms: RetryPolicy(spec.retry).delay(attempt: tries, random: Double.random(in: 0.5..<1)))
                tries += 1
            }
        }
        if let holder = try context.renewLease() { return .held(holder) }
        return nil
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

extension RunSummary {
    var lastKeyText: String { lastKey.map { "(" + $0.joined(separator: ", ") + ")" } ?? "(start)" }
}
