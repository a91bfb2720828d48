import Foundation
import PostgresClient
import Synchronization

/// Options of `backfill rehearse`.
public struct RehearsalOptions: Sendable {
    public var database: String?
    public var clients = 4
    public var baselineSeconds = 15.0
    /// The operator's own traffic: statements separated by `;`, with `:key` standing for a
    /// random existing value of the first key column. Nil: lock random rows as a writer would.
    public var trafficSQL: String?
    /// The production table's row count, for the run-time estimate (default: this table's).
    public var rowsEstimate: Int64?
    public var maxLiveP99Ms: Double?
    public var maxLockWaitMs: Double?
    /// Roll back every batch: locks are real, writes are not kept.
    public var dryRun = false
    public var store = CheckpointStore()

    public init(database: String?) { self.database = database }
}

/// `backfill rehearse`: a baseline window of synthetic live traffic, then the job while the
/// traffic goes on, and a report of what the traffic felt.
///
/// The job always runs from its first key, under a checkpoint of its own (`<name>.rehearsal`,
/// started over each time and removed at the end), so a rehearsal measures a whole walk even when
/// the job itself is done, and never moves the job's own checkpoint.
public enum Rehearsal {
    /// Live transactions the job's window must hold before a gate can pass: below 100, a p99 is
    /// just the slowest transaction, and a short window says nothing.
    public static let minimumLiveTransactions: UInt64 = 100

    /// The name the rehearsal runs the job under: its own checkpoint and lease.
    public static func jobName(for name: String) -> String { name + ".rehearsal" }

    public static func run(
        spec: JobSpec, options: RehearsalOptions, stop: StopSignal = StopSignal(), emit: @escaping @Sendable (RunEvent) -> Void = { _ in }
    ) throws -> (RehearsalReport, RunOutcome) {
        let db = try SessionPins.connect(options.database, applicationName: "backfill:\(spec.name):rehearse")
        let plan = try Planner.plan(spec, on: db)
        let transaction = try makeTraffic(plan: plan, options: options, db: db)
        let measuresLockWaits = options.trafficSQL == nil
        let description = options.trafficSQL == nil ? "SELECT … FOR NO KEY UPDATE of random rows, rolled back" : "the operator's --traffic-sql"
        let origin = ContinuousClock.now
        let elapsed: @Sendable () -> Double = { (ContinuousClock.now - origin).seconds }

        let baselineTraffic = SyntheticTraffic(clients: options.clients, conninfo: options.database, applicationName: "backfill:rehearse:traffic", measuresLockWaits: measuresLockWaits, transaction: transaction)
        while elapsed() < options.baselineSeconds && !stop.isRequested { usleep(20_000) }
        let baseline = baselineTraffic.stop()

        var rehearsed = spec
        rehearsed.name = jobName(for: spec.name)
        rehearsed.finalize = []  // a rehearsal measures the walk; it never runs the job's DDL
        var runOptions = RunOptions(database: options.database)
        runOptions.dryRun = options.dryRun
        runOptions.store = options.store
        runOptions.restart = true
        let timeline = Mutex(JobTimeline())
        let jobStart = elapsed()
        let duringTraffic = SyntheticTraffic(clients: options.clients, conninfo: options.database, applicationName: "backfill:rehearse:traffic", measuresLockWaits: measuresLockWaits, transaction: transaction)
        let outcome = Runner(spec: rehearsed, options: runOptions, stop: stop) { event in
            let t = elapsed()
            timeline.withLock { $0.record(event, at: t) }
            emit(event)
        }.run()
        let jobEnd = elapsed()
        let during = duringTraffic.stop()
        if !options.dryRun, case .done = outcome { try options.store.remove(rehearsed.name, db: db) }

        let summary: RunSummary
        switch outcome {
        case .done(let s), .stopped(_, let s), .failed(_, let s): summary = s
        case .held, .invalid: summary = RunSummary(job: rehearsed.name, state: .failed)
        }
        let tableRows = try db.query("SELECT count(*) AS n FROM \(plan.statements.table)").first?["n"].int64
        let productionRows = options.rowsEstimate ?? tableRows
        var gates: [RehearsalGate] = []
        for (name, limit, measured) in [("live p99", options.maxLiveP99Ms, during.p99Ms), ("lock wait", options.maxLockWaitMs, during.maxLockWaitMs ?? during.maxMs)] {
            guard let limit else { continue }
            gates.append(RehearsalGate(name: name, limitMs: limit, measuredMs: measured, liveTransactions: during.transactions, batches: summary.batches))
        }
        let events = timeline.withLock { $0 }
        let report = RehearsalReport(
            job: spec.name, rehearsalJob: rehearsed.name, table: plan.statements.table, clients: options.clients, dryRun: options.dryRun,
            traffic: description, baseline: baseline, during: during, jobStartSeconds: jobStart, jobEndSeconds: jobEnd,
            outcome: summary.state.rawValue, rows: summary.rows, seconds: summary.seconds,
            rowsPerSecond: summary.rowsPerSecond, batches: summary.batches, batchP50Ms: summary.batchPercentile(0.5),
            batchP99Ms: summary.batchPercentile(0.99), batchMaxMs: summary.batchMs.max() ?? 0, targetMs: spec.batch.targetMs,
            retries: Dictionary(uniqueKeysWithValues: summary.retries.map { ($0.key.rawValue, $0.value) }),
            throttledSeconds: summary.throttledSeconds, batchSeries: events.batches, events: events.marks, productionRows: productionRows,
            productionSecondsEstimate: productionRows.flatMap { rows in summary.rowsPerSecond > 0 ? Double(rows) / summary.rowsPerSecond : nil },
            gates: gates)
        return (report, outcome)
    }

    /// The live transaction each client repeats. The default one tells how long it waited for
    /// its row: it first asks for the lock with `SKIP LOCKED` (no wait, no error in the server's
    /// log); only when the row is locked does it ask again and wait, and the wait counts from the
    /// first try. The operator's own statements cannot tell (nil).
    static func makeTraffic(plan: JobPlan, options: RehearsalOptions, db: Connection) throws -> SyntheticTraffic.Transaction {
        let keys = try plan.sampleKeys(on: db)
        guard !keys.isEmpty else { return { _ in usleep(10_000); return nil } }
        if let sql = options.trafficSQL {
            let statements = sql.split(separator: ";").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
                .map { $0.replacingOccurrences(of: ":key", with: "$1") }
            return { db in
                let key = keys.randomElement()!
                for statement in statements {
                    if statement.contains("$1") { try db.query(statement, [.text(key[0])]) } else { try db.execute(statement) }
                }
                return nil
            }
        }
        let key = plan.statements.key, slots = SQL.Slot.list("key", count: key.count)
        let columns = key.map { Identifier.quote($0.name) }
        let match: [SQL] = zip(key, slots).map { k, slot in "\(identifier: k.name) = \(slot)::\(unescaped: k.type)" }
        let lock: SQL = "SELECT \(unescaped: columns.joined(separator: ", ")) FROM \(unescaped: plan.statements.table) WHERE \(match.joined(separator: " AND ")) FOR NO KEY UPDATE"
        return { db in
            let values = keys.randomElement()!.map(PostgresValue.text)
            let locked = lock.binding(slots, to: values)
            try db.execute("BEGIN")
            do {
                let first = ContinuousClock.now
                var waited: Duration?
                // No row: locked (or deleted since the sample, then the second try finds none either).
                if try db.query("\(locked) SKIP LOCKED" as SQL).rows.isEmpty, try !db.query(locked).rows.isEmpty {
                    waited = ContinuousClock.now - first
                }
                try db.execute("ROLLBACK")
                return waited
            } catch {
                if db.isOpen { try? db.execute("ROLLBACK") }
                throw error
            }
        }
    }
}

/// The job's side of a rehearsal as it happened: each batch, retry and throttle, timed from the
/// rehearsal's start.
struct JobTimeline: Sendable {
    var batches: [RehearsalBatch] = []
    var marks: [RehearsalEvent] = []

    mutating func record(_ event: RunEvent, at seconds: Double) {
        switch event.body {
        case .batch(let e):
            batches.append(RehearsalBatch(seconds: seconds, durationMs: e.duration.milliseconds, rows: e.rows, batchSize: Int64(e.batchSize)))
        case .revertBatch(let e):
            batches.append(RehearsalBatch(seconds: seconds, durationMs: e.duration.milliseconds, rows: e.rows, batchSize: Int64(e.batchSize)))
        case .retry(let e):
            marks.append(RehearsalEvent(seconds: seconds, event: event.kind.rawValue, reason: e.reason.rawValue,
                                        detail: [e.sqlstate, e.message].compactMap { $0 }.joined(separator: " ")))
        case .throttle(let e):
            marks.append(RehearsalEvent(seconds: seconds, event: event.kind.rawValue, reason: e.reason.rawValue, detail: e.state?.rawValue ?? ""))
        default: break
        }
    }
}
