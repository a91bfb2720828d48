import Foundation
import PostgresClient

/// Runs a done and verified job's `finalize` statements, once each, in order. Each step is one
/// transaction, sent as one pipeline: `BEGIN ISOLATION LEVEL READ COMMITTED`, `lock_timeout` (the
/// job's `timeouts.lock_ms`, so that a DDL waiting for its lock never holds live traffic queued
/// behind it for longer) and `statement_timeout = 0` for the transaction, the statement (exactly one, by protocol), the step's record in
/// `finalize_steps`, and `COMMIT`: the record commits with the DDL or not at all. A lock timeout,
/// deadlock or lost connection is retried by the batches' rule (`RetryLoop`: the job's `RetryPolicy`,
/// and after a lost connection reconnecting until `retry.reconnect_timeout_ms`); any other error,
/// the retries used up, or no connection within that time, fails the job naming the step, and the next run starts from that step.
struct Finalizer {
    let context: RunContext
    private var spec: JobSpec { context.spec }
    private var store: CheckpointStore { context.options.store }

    init(context: RunContext) { self.context = context }

    func run(_ db: inout Connection) throws -> RunOutcome {
        if case .refuse = try store.apply(.finalizeStarts, job: spec.name, db: db) { return try interrupted(db) }
        var done = try store.finalizedSteps(spec.name, db: db)
        var retries = RetryLoop(spec.retry)
        let count = spec.finalize.count
        for (index, statement) in spec.finalize.enumerated() {
            let step = index + 1
            func finalize(_ state: RunEvent.Finalize.State) { context.emit(.finalize(.init(step: step, steps: count, statement: statement, state: state))) }
            if done[step] == JobSpec.hash(statement) {
                finalize(.skipped)
                continue
            }
            if StopReason(jobState: try store.state(spec.name, db: db)) != nil { return try interrupted(db) }
            finalize(.started)
            let began = ContinuousClock.now
            attempts: while true {
                if context.stop.isRequested { return .stopped(.signal, context.summary(state: .pending)) }
                let tried = ContinuousClock.now
                do {
                    // The step's own bound is its lock wait: DDL such as VALIDATE CONSTRAINT may read
                    // the whole table, which no statement_timeout of Backfill's can know.
                    _ = try db.pipeline(db.beginStatements() + [
                        .init("SELECT set_config('lock_timeout', '\(spec.timeouts.lockMs)ms', true), set_config('statement_timeout', '0', true)"), .init(statement),
                        store.recordStep(spec.name, step: step, statement: statement, attempts: retries.attempt), .init("COMMIT"),
                    ])
                    break attempts
                } catch let error as PostgresError {
                    if db.isOpen { try? db.execute("ROLLBACK") }
                    switch retries.failed(error, now: context.elapsed, random: Double.random(in: 0..<1)) {
                    case .fail(let failure):
                        let failure = stepFailure(failure, step: step, statement: statement)
                        try store.apply(.finalizeFailed, job: spec.name, error: failure.description, db: db)
                        return .failed(failure, context.summary(state: .failed))
                    case .retry(let reason, let attempt, let delayMs, _, let reconnect):
                        retryEvent(reason, attempt: attempt, delayMs: delayMs, error: error, since: tried, step: step)
                        context.sleep(ms: delayMs)
                        if reconnect || !db.isOpen {
                            if let outcome = self.reconnect(&db, &retries, step: step, statement: statement) { return outcome }
                            // The COMMIT may have gone through before the connection was lost.
                            done = try store.finalizedSteps(spec.name, db: db)
                            if done[step] == JobSpec.hash(statement) { break attempts }
                        }
                    }
                }
            }
            finalize(.done(attempts: retries.attempt, took: ContinuousClock.now - began))
            retries.succeeded()
        }
        try store.apply(.finalizeDone, job: spec.name, db: db)
        return .done(context.summary(state: .done))
    }

    /// Connects again after a lost connection, with the retry rule's delays (a `retry` event each)
    /// until `retry.reconnect_timeout_ms` has passed since the connection was lost. Nil once
    /// connected; else the outcome: stopped by a signal, or failed naming the step.
    private func reconnect(_ db: inout Connection, _ retries: inout RetryLoop, step: Int, statement: String) -> RunOutcome? {
        db.close()
        while true {
            let tried = ContinuousClock.now
            do {
                db = try SessionPins.connect(context.options.database, applicationName: context.applicationName)
                retries.reconnected()
                return nil
            } catch {
                let error = error as? PostgresError ?? PostgresError(code: .connectionFailure, severity: "CLIENT", message: "\(error)")
                if context.stop.isRequested { return .stopped(.signal, context.summary(state: .pending)) }
                switch retries.reconnectFailed(error, now: context.elapsed, random: Double.random(in: 0..<1)) {
                case .fail(let failure):
                    // No connection to record the failure on: the runner records it once it has one.
                    return .failed(stepFailure(failure, step: step, statement: statement), context.summary(state: .failed))
                case .retry(let reason, let attempt, let delayMs, _, _):
                    retryEvent(reason, attempt: attempt, delayMs: delayMs, error: error, since: tried, step: step)
                    context.sleep(ms: delayMs)
                }
            }
        }
    }

    /// A step's failure: which step, the statement, and where the next run starts.
    private func stepFailure(_ failure: RunFailure, step: Int, statement: String) -> RunFailure {
        var failure = failure
        failure.message = "finalize step \(step) of \(spec.finalize.count) failed\(failure.exhausted ? " \(failure.attempts) times, giving up" : ""): \(failure.message) (statement: \(statement)); the steps before it are done, and the next run starts from this one"
        return failure
    }

    private func retryEvent(_ reason: RetryReason, attempt: Int, delayMs: Int, error: PostgresError, since tried: ContinuousClock.Instant, step: Int) {
        context.addRetry(reason)
        context.emit(.retry(.init(reason: reason, attempt: attempt, delay: .milliseconds(delayMs), failedAfter: ContinuousClock.now - tried,
                                  sqlstate: error.code.raw, message: error.message, source: .finalize(step: step))))
    }

    /// The job was paused or cancelled by an operator before a step: it keeps that state.
    private func interrupted(_ db: Connection) throws -> RunOutcome {
        let state = try store.state(spec.name, db: db)
        return .stopped(StopReason(jobState: state) ?? .cancelled, context.summary(state: state ?? .cancelled))
    }
}
