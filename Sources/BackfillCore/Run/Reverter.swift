import Foundation
import PostgresClient

/// What `backfill revert` did.
public struct RevertOutcome: Sendable {
    /// Rows that got their old values back (or, for `action: delete`, were inserted again).
    public var restored: Int64 = 0
    /// Journaled rows left because the application changed them since (or took a deleted row's key).
    public var conflicts: Int64 = 0
    /// Journal rows walked by this process.
    public var walked: Int64 = 0
    public var batches = 0
    public var dryRun = false
    /// 0: everything was restored; 1: rows were left (conflicts) or the revert failed;
    /// 2: refused (a running job, no journal, a changed job file); 3: stopped before the end
    /// (time box, signal, pause, cancel), run again to go on; 4: another process holds the job.
    public var exitCode: Int32 = 0
    /// Why the revert did not reach its end, or was refused.
    public var message: String?
}

/// `backfill revert`: walks a job's journal back, newest journal row first (the reverse of the
/// order the batches wrote them, so a `repeat` job's newest pass is undone first), in short batches, each one transaction with the revert's checkpoint, under the
/// job's lease, with the job's `lock_timeout`, retries, adaptive batch size, health throttles,
/// `max_rows_per_second`, `pause_ms`, pause and cancel, and the time box (docs/journal.md).
public struct Reverter {
    public var spec: JobSpec
    public var database: String?
    public var store = CheckpointStore()
    public var dryRun = false
    public var maxRuntime: Double?
    public var stop = StopSignal()
    public var emit: @Sendable (RunEvent) -> Void = { _ in }

    public init(spec: JobSpec, database: String?) {
        self.spec = spec
        self.database = database
    }

    public func run() throws -> RevertOutcome {
        var outcome = RevertOutcome(dryRun: dryRun)
        func refused(_ message: String) -> RevertOutcome {
            outcome.exitCode = 2
            outcome.message = message
            return outcome
        }
        guard spec.journal else {
            return refused("job `\(spec.name)` has no journal (`journal: true` in \(spec.file)): there is nothing to revert")
        }
        var db = try SessionPins.connect(database, applicationName: "backfill:\(spec.name):revert")
        defer { db.close() }
        if !dryRun { try store.migrate(db) }  // a dry run changes nothing, not even the store
        let plan = try Planner.plan(spec, on: db)
        let runner = "\(NSUserName())@\(ProcessInfo.processInfo.hostName):\(getpid())"
        var lease: Lease?
        defer { lease?.release() }
        var position: CheckpointStore.RevertPosition
        // Refusals first, before the lease: a running job holds it, and is exit 2, not 4.
        guard let row = try db.query("SELECT state, spec_hash FROM \(store.jobs) WHERE name = $1", [.text(spec.name)]).first,
              let state = JobState(rawValue: row["state"].string ?? "")
        else { return refused("no job named `\(spec.name)` in schema `\(store.schema)`") }
        if row["spec_hash"].string != spec.fingerprint { return refused(Self.specChanged(spec)) }
        if state != .reverted, case .refuse(let reason) = JobLifecycle.decide(.starts, from: state) {
            return refused("cannot revert `\(spec.name)`: it \(reason) (state: \(state.rawValue))")
        }
        if dryRun {
            if state == .reverted { return refused("cannot revert `\(spec.name)`: it is already reverted (state: reverted)") }
            position = try store.revertPosition(spec.name, db: db)
            position.restored = 0
            position.conflicts = 0
        } else {
            switch try Lease.acquire(job: spec.name, runner: runner, conninfo: database, store: store) {
            case .failure(let holder):
                outcome.exitCode = 4
                outcome.message = "another runner holds job `\(spec.name)`: \(holder)"
                return outcome
            case .success(let held): lease = held
            }
            switch try store.startRevert(spec.name, fingerprint: spec.fingerprint, runner: runner, db: db) {
            case .notFound: return refused("no job named `\(spec.name)` in schema `\(store.schema)`")
            case .specChanged: return refused(Self.specChanged(spec))
            case .refused(let state, let reason): return refused("cannot revert `\(spec.name)`: it \(reason) (state: \(state.rawValue))")
            case .alreadyReverted(let done):
                outcome.restored = done.restored
                outcome.conflicts = done.conflicts
                outcome.exitCode = done.conflicts > 0 ? 1 : 0
                outcome.message = "job `\(spec.name)` was already reverted"
                return outcome
            case .started(let started): position = started
            }
        }
        let columns = try db.query(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            [.int(plan.tableOID)]).rows.compactMap { $0["attname"].string }
        // Built once; each batch binds where it starts and how many rows it takes.
        let statement = plan.statements.revert(action: spec.action, tables: store.revertTables(), columns: columns)
            .binding([BatchStatements.Slots.job: .text(spec.name), BatchStatements.Slots.token: .text(lease?.token ?? "")])
        let settings = SessionPins.setLocal(["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(Worker.statementMs(spec))ms'",
                                             "idle_in_transaction_session_timeout = '\(Worker.idleLimitMs(spec))ms'"] + SessionPins.settings)
        var sizer = BatchSizer(initial: spec.batch.size, min: spec.batch.min, max: spec.batch.max, targetMs: spec.batch.targetMs)
        var gate = HealthGate(throttle: spec.throttle, tableOID: plan.tableOID, checkTimeoutMs: spec.timeouts.statementMs)
        let retry = RetryPolicy(spec.retry)
        let started = ContinuousClock.now
        var elapsed: Double { (ContinuousClock.now - started).milliseconds / 1000 }
        var lastRenew = 0.0, attempt = 0
        emit(RunEvent(.revert(.started(dryRun: dryRun, afterSeq: position.lastSeq)), job: spec.name))

        func stopped(_ why: String) throws -> RevertOutcome {
            outcome.exitCode = 3
            outcome.message = why
            if !dryRun { try? store.stopRevert(spec.name, error: nil, db: db) }
            return outcome
        }
        while true {
            if stop.isRequested { return try stopped("stopped by a signal; run `backfill revert` again to go on from its checkpoint") }
            if let maxRuntime, elapsed >= maxRuntime { return try stopped("stopped at --max-runtime; run `backfill revert` again to go on from its checkpoint") }
            if let held = lease, elapsed - lastRenew >= 5 {
                lastRenew = elapsed
                if case .lost(let reason) = held.renew() {
                    outcome.exitCode = 4
                    outcome.message = "lease lost: \(reason)"
                    return outcome
                }
            }
            if let (reason, detail) = try gate.check(at: elapsed, db: db) {
                emit(RunEvent(.throttle(.init(cause: .revert(reason, detail: detail), worker: nil)), job: spec.name))
                Thread.sleep(forTimeInterval: gate.retryAfter)
                continue
            }
            let size = sizer.size
            let began = ContinuousClock.now
            let row: PostgresRow?
            do {
                var pipeline = Pipeline([Connection.Statement("BEGIN ISOLATION LEVEL READ COMMITTED"), Connection.Statement(settings)])
                let batch = pipeline.append(Connection.Statement(statement.binding([
                    BatchStatements.Slots.lastSeq: position.lastSeq.map { .int($0) } ?? .null, BatchStatements.Slots.limit: .int(Int64(size)),
                ])))
                let jobState = pipeline.append(Connection.Statement("SELECT state FROM \(store.jobs) WHERE name = $1", [.text(spec.name)]))
                let results = try db.run(pipeline)
                row = results[batch].first
                let state = results[jobState].first?["state"].string
                if !dryRun, row?["leased"].bool != true {
                    try db.execute("ROLLBACK")
                    outcome.exitCode = 4
                    outcome.message = "lease lost: the lease row was taken by another runner or removed by `backfill unlock`"
                    return outcome
                }
                if state == JobState.paused.rawValue || state == JobState.cancelled.rawValue {
                    try db.execute("ROLLBACK")
                    return try stopped("the job was \(state ?? "") by an operator; the batch in flight was rolled back")
                }
                try db.execute(dryRun ? "ROLLBACK" : "COMMIT")
                attempt = 0
            } catch let error as PostgresError {
                if db.isOpen { try? db.execute("ROLLBACK") }
                attempt += 1
                switch retry.decide(error, attempt: attempt, random: Double.random(in: 0..<1)) {
                case .fail:
                    outcome.exitCode = 1
                    outcome.message = "revert batch failed: \(error.message)"
                    if !dryRun { try? store.stopRevert(spec.name, error: error.message, db: db) }
                    return outcome
                case .retry(let reason, let delayMs, let halve, let reconnect):
                    emit(RunEvent(.retry(.init(reason: reason, attempt: attempt, delay: .milliseconds(delayMs), message: error.message, source: .revert)), job: spec.name))
                    if halve { sizer.halve() }
                    Thread.sleep(forTimeInterval: Double(delayMs) / 1000)
                    if reconnect || !db.isOpen {
                        db.close()
                        if let fresh = try? SessionPins.connect(database, applicationName: "backfill:\(spec.name):revert") { db = fresh }
                    }
                    // A lost COMMIT may have committed: go on from the checkpoint the store holds.
                    if !dryRun, db.isOpen, let stored = try? store.revertPosition(spec.name, db: db) { position.lastSeq = stored.lastSeq }
                    continue
                }
            }
            let took = ContinuousClock.now - began
            let rows = row?["rows"].int64 ?? 0, restored = row?["restored"].int64 ?? 0, conflicts = row?["conflicts"].int64 ?? 0
            // No journal row left below the checkpoint: the journal is walked.
            guard rows > 0, let last = row?["last"].int64 else { break }
            position.lastSeq = last
            outcome.walked += rows
            outcome.restored += restored
            outcome.conflicts += conflicts
            outcome.batches += 1
            sizer.record(keys: Int(rows), durationMs: took.milliseconds)
            emit(RunEvent(.revertBatch(.init(dryRun: dryRun, rows: rows, restored: restored, conflicts: conflicts, batchSize: size, duration: took,
                                             lastSeq: last, nextBatchSize: sizer.size)), job: spec.name))
            if spec.throttle.maxRowsPerSecond > 0 {
                let wait = try store.consumeRate(spec.name, rows: rows, rowsPerSecond: spec.throttle.maxRowsPerSecond, db: db)
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            }
            if spec.batch.pauseMs > 0 { Thread.sleep(forTimeInterval: Double(spec.batch.pauseMs) / 1000) }
        }
        if !dryRun {
            try store.finishRevert(spec.name, db: db)
            let total = try store.revertPosition(spec.name, db: db)
            outcome.restored = total.restored
            outcome.conflicts = total.conflicts
        }
        outcome.exitCode = outcome.conflicts > 0 ? 1 : 0
        emit(RunEvent(.revert(.ended(dryRun: dryRun, restored: outcome.restored, conflicts: outcome.conflicts, exitCode: outcome.exitCode)), job: spec.name))
        return outcome
    }

    static func specChanged(_ spec: JobSpec) -> String {
        "job `\(spec.name)` in the store was run with a different job file than \(spec.file): revert it with the job file it ran with (its journal is that file's)"
    }
}
