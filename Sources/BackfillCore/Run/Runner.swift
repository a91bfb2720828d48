import Foundation
import PostgresClient

/// How a run ended; the CLI maps it to an exit code.
public enum RunOutcome: Sendable {
    /// Every key walked (and, where the job has `where`, no row still matches it).
    case done(RunSummary)
    /// Stopped before done; run again to resume.
    case stopped(StopReason, RunSummary)
    /// A permanent error, or the retries ran out; committed batches stay.
    case failed(RunFailure, RunSummary)
    /// Another runner holds the job's lease.
    case held(LeaseHolder)
    /// The job file or a database object is not right; nothing changed.
    case invalid(JobFileError)

    /// What the operator should do next, in one line.
    public var nextStep: String {
        switch self {
        case .done(let s) where s.badRows > 0:
            "`backfill bad-rows \(s.job)` lists the \(s.badRows) bad rows (key, SQLSTATE, message); fix those rows by hand, or fix the job and run it with --restart"
        case .done: "nothing: the job is done"
        case .stopped(.paused, let s): "`backfill resume \(s.job)`, then run again to continue from the checkpoint"
        case .stopped(.cancelled, _): "the job was cancelled; run with --restart to start it over from the first key"
        case .stopped(.leaseLost, _): "another runner took the job, `backfill unlock` released it or the lease's session ended: check `backfill status`, then run again to resume"
        case .stopped: "run again to resume from the checkpoint"
        case .failed: "fix the cause above, then run again: committed batches are kept and the run resumes after them"
        case .held: "wait for the other runner to finish, or check `backfill status`; to add workers on purpose, use --join"
        case .invalid: "fix the job file or the database object named above; nothing was changed"
        }
    }

    /// The contract's exit code: 0 done, 1 failed, 2 invalid, 3 stopped, 4 held; a job done with
    /// bad rows quarantined exits 1 unless `on_error.exit_zero`.
    public var exitCode: Int32 {
        switch self {
        case .done(let s): s.badRows > 0 && s.badRowsFail ? 1 : 0
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
    /// Workers in this process; nil uses the job file's `workers`.
    public var workers: Int?
    /// Roll every batch back instead of committing it (staging rehearsal of a database that must
    /// not change). Locks are real, writes are not kept; nothing is written to the checkpoint
    /// store, the lease is not taken, and the walk's position is kept in memory.
    public var dryRun = false
    /// With the job's `requires` false: re-check every second for this many seconds before
    /// giving up (exit 2), instead of giving up at once.
    public var waitForRequirements: Double?

    public init(database: String? = nil) { self.database = database }
}

/// Runs one job: plans it, takes the lease, splits the key space into ranges on the first run,
/// and runs the workers until the job is done, stopped or failed. Blocking: call it from a thread
/// of its own, not from the cooperative pool.
public final class Runner {
    let context: RunContext
    /// A physical walk's last end check: the pages that hold rows still matching `where`, by heap,
    /// for its catch-up pass; nil (every page is walked again) when it found `stragglerLimit` rows.
    private var stragglers: [String: [Int64]]?
    /// How many rows a physical walk's end check reads before it stops listing their pages.
    static let stragglerLimit: Int64 = 10_000

    public init(spec: JobSpec, options: RunOptions, stop: StopSignal = StopSignal(), emit: @escaping @Sendable (RunEvent) -> Void = { _ in }) {
        context = RunContext(spec: spec, options: options, stop: stop, emit: emit)
    }

    var spec: JobSpec { context.spec }
    var options: RunOptions { context.options }

    /// Runs the job to an outcome. Never throws: every failure becomes an outcome.
    public func run() -> RunOutcome {
        defer { context.watchdog?.stop() }
        var db: Connection?
        let outcome: RunOutcome
        do {
            db = try SessionPins.connect(options.database, applicationName: context.applicationName)
            outcome = try runChecked(&db!)
        } catch let error as JobFileError {
            outcome = .invalid(error)
        } catch {
            outcome = .failed(RunFailure(error), context.summary(state: .failed))
        }
        // Only the lease holder records the job's final state: a `--join` process, or a run that
        // stopped before it took the lease, must not write over a job another runner holds.
        if let live = db, !options.dryRun, context.holdsLease, let db = try? reconnectIfLost(live) {
            switch outcome {
            case .failed(let failure, _): try? options.store.finish(spec.name, state: .failed, error: failure.description, db: db)
            case .stopped(.signal, _), .stopped(.timeBox, _): try? options.store.finish(spec.name, state: .pending, db: db)
            default: break
            }
        }
        context.releaseLease()
        let (code, next) = (outcome.exitCode, outcome.nextStep)
        switch outcome {
        case .done(let s): context.emit(.done(.init(summary: s, exitCode: code, next: next)))
        case .stopped(let reason, let s):
            let why = context.leaseWatch.lostReason.map { "lease lost: \($0)" }
            context.emit(.stop(.init(reason: reason, message: why, summary: s, exitCode: code, next: next)))
        case .failed(let failure, let s): context.emit(.error(.init(cause: .run(failure, s), exitCode: code, next: next)))
        case .held, .invalid: break
        }
        return outcome
    }

    private func runChecked(_ db: inout Connection) throws -> RunOutcome {
        let store = options.store
        // What no pin can change is refused before anything is created: a read-only default, a
        // standby, too few connection slots for even one worker.
        try SessionPins.checkWritable(spec, db: db)
        for warning in try ChangeCapture.check(spec, workers: options.workers ?? spec.workers, db: db) {
            context.emit(.cdc(.warning(message: warning)))
        }
        let takesLease = !options.join && !options.dryRun
        let early = try ConnectionBudget.read(db)
        if early.fit(workers: 1, watchdog: false, lease: takesLease) == .none { throw noSlot(early, lease: takesLease) }
        // Before anything else, the store included: the requirement may wait for the migration
        // that creates the job's own column.
        if let stopped = try Requirements.await(context, db: db) { return stopped }
        let plan = try Planner.plan(spec, on: db)
        if options.dryRun {
            context.emit(.start(try start(plan, rowsBefore: 0, mode: .dryRun, db: db)))
            return try interrupted(runWorkers(count: 1, plan: plan)) ?? finishDone(&db)
        }
        try store.migrate(db)
        if !options.join {
            if let holder = try context.acquireLease() { return .held(holder) }
        }
        // Live tuning's workers beat the flag and the file: it is the operator's latest word.
        let wanted = (options.restart ? nil : try store.tuning(spec.name, db: db)?.workers) ?? options.workers ?? spec.workers
        let workers = try fitWorkers(wanted, db: db)
        let prepared = try store.prepare(spec, plan: plan, workers: workers, restart: options.restart, db: db)
        context.setRowsBefore(try store.status(job: spec.name, db: db).first?.rowsDone ?? 0)
        switch prepared {
        case .ready: break
        case .alreadyDone where try context.holdsLease && store.pendingFinalizeSteps(spec, db: db) > 0:
            break  // walked and verified before; finalize steps added or changed since: run them
        case .alreadyDone: return .done(try doneSummary(db))
        case .notRunnable(let state, _):
            return .stopped(StopReason(jobState: state) ?? .cancelled, context.summary(state: state))
        case .specChanged:
            throw JobFileError(
                file: spec.file, field: nil,
                problem: "job `\(spec.name)` has a checkpoint made by a different version of this file (its table, key, where, set, sql or action changed)",
                fix: "run with --restart to discard the checkpoint and start over from the first key, or give the changed job a new `name`")
        }
        if context.holdsLease { try store.markRunning(spec.name, runner: context.runnerName, db: db) }
        let status = try store.status(job: spec.name, db: db).first
        context.emit(.start(try start(plan, rowsBefore: status?.rowsDone ?? 0, mode: .run(workers: workers, ranges: status?.ranges ?? 0), db: db)))
        return try runPasses(workers: workers, plan: plan, db: &db)
    }

    /// The workers that fit the connection slots left (`ConnectionBudget`), the watchdog turned off
    /// when even one worker would not fit beside it; a `connections` event says so.
    private func fitWorkers(_ wanted: Int, db: Connection) throws -> Int {
        let budget = try ConnectionBudget.read(db)
        let watchdog = context.watchdog != nil
        let fit = budget.fit(workers: wanted, watchdog: watchdog)
        switch fit {
        case .all: return wanted
        case .reduced(let workers, let keepsWatchdog):
            if !keepsWatchdog { context.watchdog?.stop() }
            context.emit(.connections(budget.event(fit, workers: wanted, lease: context.holdsLease, watchdog: watchdog)))
            return workers
        case .none: throw noSlot(budget, lease: false)
        }
    }

    /// The refusal when not even one worker fits the connection slots (`lease`: the lease is yet
    /// to be taken and counts too).
    private func noSlot(_ budget: ConnectionBudget, lease: Bool) -> JobFileError {
        JobFileError(
            file: spec.file, field: nil, problem: budget.message(.none, workers: 1, lease: lease, watchdog: false),
            fix: "raise the limit (ALTER ROLE … CONNECTION LIMIT n, ALTER DATABASE … CONNECTION LIMIT n, max_connections), or end other sessions of the role; `backfill plan` shows what a run needs")
    }

    /// Runs the workers until every range is walked; then, when rows still match `where` behind
    /// the walk (changed during the run), walks again, at most `catch_up_passes` times. A
    /// `repeat` job leaves them to its next pass and is done.
    private func runPasses(workers: Int, plan: JobPlan, db: inout Connection) throws -> RunOutcome {
        var catchUps = 0
        while true {
            let endCheck = overlappedEndCheck(plan, db: db)
            endCheck?.start()
            if let interrupted = interrupted(runWorkers(count: workers, plan: plan)) {
                _ = endCheck?.finish(cancel: true)
                return interrupted
            }
            let walked = ContinuousClock.now
            let early = endCheck?.finish(cancel: false)
            db = try reconnectIfLost(db)
            // The lease holder judges the end; a joining process is done when no range is left.
            guard context.holdsLease, let remaining = try remainingRows(plan, db, early: early) else { return try finishDone(&db) }
            let checked = RunSummary.EndCheckFigures(mode: early == nil ? .afterWalk : .overlapped, took: ContinuousClock.now - walked)
            if remaining == 0 { return try finishDone(&db, endCheck: checked) }
            if spec.repeats {
                context.emit(.pass(.init(pass: nil, remaining: remaining,
                                         reason: "\(remaining >= 1000 ? "1000 or more" : String(remaining)) rows match `where` behind the walk: the next run's pass takes them",
                                         endCheck: checked.mode)))
                return try finishDone(&db, endCheck: checked)
            }
            guard catchUps < spec.catchUpPasses else {
                var summary = context.summary(state: .failed)
                summary.state = .failed
                return .failed(RunFailure(message: "walked every key\(catchUps > 0 ? " and \(catchUps) catch-up passes" : ""), but \(remaining >= 1000 ? "at least 1000" : String(remaining)) rows still match `where`: a `set` that leaves rows matching, or rows that keep changing behind the walk, cause this; check with `backfill verify`, raise `catch_up_passes`, or use `repeat: true` for work that never ends"), summary)
            }
            catchUps += 1
            try db.transaction { try options.store.startPass(spec.name, plan: plan, stragglers: stragglers, db: $0) }
            try options.store.markRunning(spec.name, runner: context.runnerName, db: db)
            context.emit(.pass(.init(pass: catchUps + 1, remaining: remaining,
                                     reason: "catch-up \(catchUps) of \(spec.catchUpPasses): \(remaining >= 1000 ? "1000 or more" : String(remaining)) rows still match `where` behind the walk",
                                     endCheck: checked.mode)))
        }
    }

    /// Runs `count` workers, each on a thread and a connection of its own, waits for them, and
    /// returns their results.
    private func runWorkers(count: Int, plan: JobPlan) -> [WorkerResult] {
        let done = DispatchGroup()
        let context = self.context
        for index in 0..<count {
            done.enter()
            let thread = Thread {
                let result = Worker(context: context, plan: plan, index: index).run()
                context.record(result)
                if case .failed = result { context.abort() }
                done.leave()
            }
            thread.stackSize = 4 << 20
            thread.start()
        }
        done.wait()
        return context.takeResults()
    }

    /// The outcome when the workers did not all finish: a lost lease wins (a worker that saw it
    /// fails its claim), then a failure, then a held lease, then a stop; nil when every worker
    /// is done.
    private func interrupted(_ results: [WorkerResult]) -> RunOutcome? {
        if context.leaseWatch.lostReason != nil { return .stopped(.leaseLost, context.summary(state: .pending)) }
        for case .failed(let failure) in results { return .failed(failure, context.summary(state: .failed)) }
        for case .held(let holder) in results { return .held(holder) }
        for case .stopped(let reason) in results {
            return .stopped(reason, context.summary(state: reason.jobState))
        }
        return nil
    }

    /// The coordinator's connection sits idle while the workers run; a server restart may have
    /// ended it. Returns it, or a new one.
    private func reconnectIfLost(_ db: Connection) throws -> Connection {
        if (try? db.query("SELECT 1")) != nil { return db }
        return try SessionPins.connect(options.database, applicationName: context.applicationName)
    }

    /// Every key is walked and the end check passed: the job's `finalize` steps, then done. The
    /// steps wait while the job has bad rows that fail it (`on_error.exit_zero` false): those rows
    /// are not filled, and the run exits 1 naming them.
    private func finishDone(_ db: inout Connection, endCheck: RunSummary.EndCheckFigures? = nil) throws -> RunOutcome {
        var summary = try doneSummary(db)
        summary.endCheck = endCheck
        if !options.dryRun, context.holdsLease, !spec.finalize.isEmpty, summary.badRows == 0 || !summary.badRowsFail {
            let finalized = try Finalizer(context: context).run(&db)
            guard case .done = finalized else { return finalized }
            return .done(summary)  // the finalizer recorded the job done
        }
        if !options.dryRun, context.holdsLease { try options.store.finish(spec.name, state: .done, db: db) }
        return .done(summary)
    }

    /// The summary of a finished job, with its bad rows (the store's count: earlier runs' too).
    private func doneSummary(_ db: Connection) throws -> RunSummary {
        var summary = context.summary(state: .done)
        summary.badRows = options.dryRun ? summary.runBadRows : try options.store.badRowCount(spec.name, db: db)
        summary.badRowsFail = !spec.onError.exitZero
        return summary
    }

    /// Rows still matching `where` (at most 1000, read-only), or nil when there is nothing to
    /// check (no `where`, a `sql` action, a dry run). Rows quarantined as bad are not counted:
    /// they are known, and listed by `backfill bad-rows`. After an early count (`EndCheck`) only
    /// the intervals it left out are read.
    private func remainingRows(_ plan: JobPlan, _ db: Connection, early: EndCheck.Early?) throws -> Int64? {
        guard !options.dryRun, !isSQLAction, spec.whereClause != nil else { return nil }
        if spec.walk == .physical {
            let found = try EndCheck.stragglers(spec: spec, plan: plan, store: options.store, limit: Self.stragglerLimit, db: db)
            stragglers = found.pages
            return found.rows
        }
        if let early { return try EndCheck.remaining(after: early, spec: spec, statements: plan.statements, store: options.store, limit: 1000, db: db) }
        return try EndCheck.count(.all, spec: spec, statements: plan.statements, store: options.store, limit: 1000, db: db)
    }

    /// The end check overlapped with the end of the walk, for the lease holder of a job that has
    /// one (a `where`, not a `sql` action, not a dry run).
    /// It borrows the coordinator's connection, idle while the workers run (`finish` hands it
    /// back), so that it needs no connection slot of its own.
    ///
    /// A physical walk has none: rows move anywhere in the heap, behind the walk too, so its check
    /// reads every page once the walk is over.
    private func overlappedEndCheck(_ plan: JobPlan, db: Connection) -> EndCheck? {
        guard context.holdsLease, !options.dryRun, !isSQLAction, spec.whereClause != nil, spec.walk == .key else { return nil }
        return EndCheck(spec: spec, plan: plan, store: options.store, borrowing: EndCheck.Borrowed(db))
    }

    private var isSQLAction: Bool {
        if case .sql = spec.action { return true }
        return false
    }

    /// The `start` event, with the key's numeric bounds when the first key column has them (read
    /// from the index's two ends), for progress and ETA.
    private func start(_ plan: JobPlan, rowsBefore: Int64, mode: RunEvent.Start.Mode, db: Connection) throws -> RunEvent.Start {
        RunEvent.Start(
            table: spec.table, action: spec.action.name, rowsEstimate: plan.estimatedRows, rowsDoneBefore: rowsBefore, batchSize: spec.batch.size,
            target: .milliseconds(spec.batch.targetMs), keyIndex: plan.keyIndex, runner: context.runnerName, runID: context.runID,
            cdcOrigin: spec.cdc.origin, cdcMessages: spec.cdc.messages, keyBounds: try plan.keyBounds(on: db).map { .init(min: $0.min, max: $0.max) }, mode: mode)
    }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
