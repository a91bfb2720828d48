import Foundation
import PostgresClient

/// A worker's `BatchSession` on libpq: its own connection, directly to the server when it can
/// (then the statements of every batch are prepared once and only executed), the batch's
/// settings, the checkpoint store's statements, and the stop signal and the watchdog, which
/// cancel the statement in flight.
///
/// One batch transaction takes at most three round trips: (1) `BEGIN`, the settings and the
/// claim of a range; (2) the upper key, read from the key's index; (3) the batch statement, the
/// checkpoint and `COMMIT`, sent together, so that the server takes the table's row locks and
/// releases them without ever waiting for Backfill. For `update` and `delete` the checkpoint is
/// part of the batch statement; a `sql` action's checkpoint needs its row count, so it follows
/// in a fourth round trip, with `idle_in_transaction_session_timeout` as the bound on a frozen
/// runner. A dry run ends with `ROLLBACK` instead.
final class PostgresBatchSession: BatchSession {
    private let context: RunContext
    private let plan: JobPlan
    private let index: Int
    private let name: String
    private var connection: Connection?
    private let health: HealthReader
    private var cost: WriteCost
    private var spec: JobSpec { context.spec }
    private var store: any RunStore { context.store }
    /// The server backend of the open transaction, as its claim read it (through a pooler it is
    /// not the one libpq was told).
    private var transactionPID: Int32?
    /// Whether a transaction of the session's is open (a batch's, or the bad-key search's).
    private var inTransaction = false
    private(set) var watchdogWaited: Duration?
    /// The heap the claimed range walks: a partition of a physical walk's partitioned table (its
    /// statements `UPDATE` that partition), else the job's table.
    private var relation: String?
    private var statements: BatchStatements { plan.statements(for: relation) }

    init(context: RunContext, plan: JobPlan, index: Int) {
        self.context = context
        self.plan = plan
        self.index = index
        name = "\(context.runnerName):w\(index)"
        cost = WriteCost(tableOID: plan.tableOID)
        health = HealthReader(throttle: context.spec.throttle, tableOID: plan.tableOID, checkTimeoutMs: context.spec.timeouts.statementMs) { [store = context.store, spec = context.spec] db in
            try store.consumeWal(spec.name, mbPerSecond: spec.throttle.maxWalMBPerSecond, db: db)
        }
    }

    private func db() throws -> Connection {
        guard let connection else { throw PostgresError(code: .connectionFailure, severity: "CLIENT", message: "not connected") }
        return connection
    }

    // MARK: Connecting

    func connect() throws -> String? {
        disconnect()
        let db = try SessionPins.connect(context.options.database, applicationName: context.applicationName)
        db.preparesStatements = db.direct == true
        // With `cdc.origin` (not in a dry run, which commits nothing): everything the session
        // commits is marked with the job's replication origin (`ChangeCapture`).
        var origin: String?
        if let name = spec.cdc.origin, !context.options.dryRun {
            do {
                origin = try ChangeCapture.setUpOrigin(name, db: db)
            } catch {
                db.close()
                throw error
            }
        }
        connection = db
        opening = nil
        ended()
        context.workerConnection(true)
        return origin
    }

    func disconnect() {
        guard let connection else { return }
        connection.close()
        self.connection = nil
        context.workerConnection(false)
    }

    // MARK: The batch transaction

    /// `BEGIN` and the batch's `SET LOCAL`s: timeouts, the plan's settings, the session pins,
    /// asynchronous commit (the checkpoint commits with the data, so a crash loses both together
    /// and the rerun redoes exactly that work), and a limit on how long the transaction may sit
    /// idle waiting for Backfill (a frozen runner's transaction is ended).
    private var opening: [Connection.Statement]?

    private func openingStatements(_ db: Connection) -> [Connection.Statement] {
        if let opening { return opening }
        var settings = ["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(Worker.statementMs(spec))ms'",
                        "synchronous_commit = off", "idle_in_transaction_session_timeout = '\(Worker.idleLimitMs(spec))ms'"]
        if db.serverVersion >= 170_000 {
            settings.append("transaction_timeout = '\(spec.timeouts.statementMs * 2 + Worker.idleLimitMs(spec))ms'")
        }
        let statements = [Connection.Statement("BEGIN ISOLATION LEVEL READ COMMITTED"),
                          Connection.Statement(SessionPins.setLocal(settings + plan.batchSettings + SessionPins.settings), prepared: true)]
        opening = statements
        return statements
    }

    /// Runs `body` as the statement in flight: a stop cancels it, and so does the watchdog when
    /// live traffic waits on it too long.
    private func inFlight<T>(_ body: (Connection) throws -> T) throws -> T {
        let db = try db()
        let token = db.makeCancelToken()
        context.stop.setInFlight(token, worker: index)
        if let token { context.watchdog?.watch(index, pid: transactionPID ?? db.backendPID, token: token) }
        watchdogWaited = nil
        defer {
            context.stop.setInFlight(nil, worker: index)
            watchdogWaited = context.watchdog?.unwatch(index).map { .milliseconds($0) }
        }
        return try body(db)
    }

    func claim(preferring range: Int?) throws -> RangeClaim? {
        try inFlight { db in
            inTransaction = true
            let claim = try store.open(openingStatements(db), job: spec.name, preferring: range, db: db)
            transactionPID = claim?.backendPID
            relation = claim?.relation
            return claim
        }
    }

    func upperKey(_ claim: RangeClaim, size: Int, bySpan: Bool) throws -> UpperKey? {
        if statements.physical {
            // Pages: by arithmetic, no query. A store that keeps no ranges (a dry run's) has no
            // ceiling: the table's size at planning time is.
            return BatchStatements.pageBatch(after: claim.lower, ceiling: claim.ceiling ?? BatchStatements.page(plan.pages), pages: size)
                .map { UpperKey(key: $0.upper, walked: $0.pages, bound: .pages) }
        }
        return try inFlight { db in
            let offset = Int64(size - 1)
            if bySpan, let lower = claim.lower, let span = statements.spanBound(after: lower, below: claim.ceiling, offset: offset) {
                return try db.query(span, prepared: db.preparesStatements).first.map { upper(statements.upperKey($0), .span) }
            }
            return try db.query(statements.upperBound(after: claim.lower, below: claim.ceiling, offset: offset), prepared: db.preparesStatements)
                .first.map { upper(statements.upperKey($0), .counted) }
        }
    }

    private func upper(_ found: (key: [String], walked: Int), _ bound: UpperKey.Bound) -> UpperKey {
        UpperKey(key: found.key, walked: found.walked, bound: bound)
    }

    func firstKey(_ claim: RangeClaim, atMost upper: [String]) throws -> [String]? {
        try splitPoint(lower: claim.lower, upper: upper, offset: 0)?.key
    }

    func completeRange(_ claim: RangeClaim) throws {
        try inFlight { db in
            try store.completeRange(spec.name, range: claim.range, db: db)
            try db.execute(store.closing)
            ended()
        }
    }

    func write(_ write: BatchWrite) throws -> Written {
        try inFlight { db in try self.write(write, db: db) }
    }

    private func write(_ write: BatchWrite, db: Connection) throws -> Written {
        let claim = write.claim, upper = write.upper
        let afterKey = claim.lower != nil
        let waiters = spec.throttle.whenBlocking ? Connection.Statement(CheckpointStore.waitersQuery, prepared: true) : nil
        // cdc.messages: the batch's message, first in its last round trip (before its changes).
        let message = ChangeCapture.message(spec, run: context.runID, worker: name, range: claim.range, lower: claim.lower, upper: upper, keys: write.keys)
        func checkpoint(rows: SQL, outside: SQL, still: SQL? = nil) -> SQL? {
            store.checkpoint(spec.name, range: claim.range, lastKey: upper, keys: write.keys, worker: name, rows: rows, outside: outside, stillMatching: still)
        }
        // Just before COMMIT: who waits on the batch, the WAL position and the table's update
        // counters (WriteCost).
        func finish(_ pipeline: inout Pipeline) -> Finish {
            let waited = waiters.map { pipeline.append($0) }
            let reading = pipeline.append(cost.reading)
            pipeline.append(Connection.Statement(store.closing))
            return Finish(waiters: waited, cost: reading)
        }
        // A part of one key is written under a savepoint: if it fails, its row is recorded and
        // the checkpoint moved past it in the same transaction; its end is sent after it.
        if write.single { _ = try db.pipeline([.init("SAVEPOINT backfill_part"), .init("SET CONSTRAINTS ALL IMMEDIATE")]) }
        let changed: (rows: Int64, outside: Int64)
        var pipeline = Pipeline(message)
        var ending: (finish: Finish, results: Pipeline.Results)?
        if let counts = statements.counts(afterKey: afterKey), let moved = checkpoint(rows: counts.rows, outside: counts.outside, still: counts.still) {
            // update/delete: data and checkpoint (and, with `journal`, what the batch replaced)
            // in one statement, then COMMIT, in one round trip.
            let journal = spec.journal ? store.journal(spec.name) : nil
            let statement = statements.batch(afterKey: afterKey, checkpoint: moved, journal: journal)
            let batch = pipeline.append(Connection.Statement(statements.binding(statement, lower: claim.lower, upper: upper), prepared: true))
            let end = write.single ? nil : finish(&pipeline)
            let results = try db.run(pipeline)
            changed = statements.changed(by: results[batch])
            ending = end.map { ($0, results) }
        } else {
            let batch = pipeline.append(Connection.Statement(statements.batch(after: claim.lower, upTo: upper), prepared: true))
            if let moved = checkpoint(rows: "0", outside: "0") {
                // A sql action: its own statement, then the checkpoint with its row count.
                changed = statements.changed(by: try db.run(pipeline)[batch])
                pipeline = Pipeline([Connection.Statement(checkpoint(rows: SQL(unescaped: String(changed.rows)), outside: "0") ?? moved)])
                let end = write.single ? nil : finish(&pipeline)
                let results = try db.run(pipeline)
                ending = end.map { ($0, results) }
            } else {
                // A dry run: the batch, who waits on it, and ROLLBACK, in one round trip.
                let end = write.single ? nil : finish(&pipeline)
                let results = try db.run(pipeline)
                changed = statements.changed(by: results[batch])
                ending = end.map { ($0, results) }
            }
        }
        if changed.outside > 0 { return Written(rows: changed.rows, outside: changed.outside) }
        func finishAlone() throws -> (finish: Finish, results: Pipeline.Results) {
            var end = Pipeline()
            let finish = finish(&end)
            return (finish, try db.run(end))
        }
        let last = try ending ?? finishAlone()
        ended()
        store.moved(spec.name, range: claim.range, lastKey: upper)
        cost.record(walBefore: claim.walPosition, reading: last.results[last.finish.cost])
        let waited = last.finish.waiters.map { Waiters(last.results[$0].rows.first) } ?? Waiters(count: 0, longestMs: 0)
        return Written(rows: changed.rows, waiters: waited, walBytes: cost.walBytes, hotShare: cost.hotShare)
    }

    /// The end of a batch's last round trip, just before `COMMIT`: the handles of who waits on
    /// the batch and of the cost reading.
    private struct Finish {
        var waiters: Pipeline.Handle?
        var cost: Pipeline.Handle
    }

    func quarantine(_ write: BatchWrite, error: PostgresError) throws -> Int64 {
        try inFlight { db in
            try db.execute("ROLLBACK TO SAVEPOINT backfill_part")
            return try store.quarantine(spec.name, range: write.claim.range, key: write.upper, error: error, worker: name, db: db)
        }
    }

    func commitQuarantine(_ write: BatchWrite) throws {
        try inFlight { db in
            let claim = write.claim
            let moved = store.checkpoint(spec.name, range: claim.range, lastKey: write.upper, keys: 1, worker: name, rows: "0", outside: "0", stillMatching: nil)
            _ = try db.pipeline((moved.map { [Connection.Statement($0)] } ?? []) + [Connection.Statement(store.closing)])
            ended()
            store.moved(spec.name, range: claim.range, lastKey: write.upper)
        }
    }

    func rollback() {
        ended()
        if let connection, connection.isOpen { try? connection.execute("ROLLBACK") }
    }

    private func ended() {
        inTransaction = false
        transactionPID = nil
    }

    // MARK: Bisection and the bad-key search

    func splitPoint(lower: [String]?, upper: [String], offset: Int) throws -> (key: [String], walked: Int)? {
        let db = try db()
        let query = statements.upperBound(after: lower, below: upper, offset: Int64(max(offset, 0)))
        // Inside a transaction (a part's, the search's) it reads there; else in one of its own,
        // with the session pins, so that the key's text form reads back as the same value.
        if inTransaction { return try db.query(query).first.map(statements.upperKey) }
        return try db.transaction { db in
            try db.execute(SessionPins.statements)
            return try db.query(query).first.map(statements.upperKey)
        }
    }

    func beginProbe() throws {
        try inFlight { db in
            inTransaction = true
            _ = try db.pipeline(openingStatements(db))
            var pipeline = Pipeline([.init("SET CONSTRAINTS ALL IMMEDIATE")])
            let backend = pipeline.append(.init("SELECT pg_backend_pid() AS pid"))
            if let pid = try db.run(pipeline)[backend].rows.first?["pid"].int {
                transactionPID = Int32(pid)
            }
        }
    }

    func probe(lower: [String]?, upper: [String]) throws {
        try inFlight { db in
            try db.execute("SAVEPOINT backfill_probe")
            _ = try db.query(statements.batch(after: lower, upTo: upper))
            try db.execute("RELEASE SAVEPOINT backfill_probe")
        }
    }

    func undoProbe() throws {
        try db().execute("ROLLBACK TO SAVEPOINT backfill_probe")
    }

    // MARK: Between batches

    func readHealth(slow: Bool) throws -> HealthReading {
        let db = try db()
        context.stop.setInFlight(db.makeCancelToken(), worker: index)  // a stop cancels a hanging check_sql
        defer { context.stop.setInFlight(nil, worker: index) }
        return try health.read(db, slow: slow)
    }

    func setThrottle(_ reason: ThrottleReason?, detail: String?) throws {
        try store.setThrottle(spec.name, reason: reason?.rawValue, detail: detail, db: db())
    }

    func jobState() throws -> JobState? { try store.state(spec.name, db: db()) }

    func consumeRate(rows: Int64, rowsPerSecond: Int) throws -> Duration {
        .milliseconds(Int64((try store.consumeRate(spec.name, rows: rows, rowsPerSecond: rowsPerSecond, db: db()) * 1000).rounded(.up)))
    }

    func openRanges() throws -> Int { try store.openRanges(spec.name, db: db()) }

    func splitLargestRange(minimumRows: Int64) throws -> Bool {
        try store.splitLargestRange(spec.name, plan: plan, minimumRows: minimumRows, db: db())
    }

    func heartbeat(range: Int?, rowsDone: Int64) {
        guard let connection else { return }
        let elapsed = context.elapsed
        try? store.heartbeat(spec.name, worker: name, range: range, rowsDone: rowsDone, rowsPerSecond: elapsed > 0 ? Double(rowsDone) / elapsed : 0, db: connection)
    }
}
