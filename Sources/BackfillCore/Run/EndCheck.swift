import Foundation
import PostgresClient
import Synchronization

/// The end check, overlapped with the end of the walk. The check that no row still matches
/// `where` is a full scan; run after the last batch, it adds its whole time to every run. Instead,
/// once at most `startWhenLeft` of the keys are left to walk (extrapolated from the density each
/// open range walked when the key is a number, since a range is often a quarter off its
/// estimate; from the ranges' estimates otherwise), a
/// thread of its own counts, on the coordinator's connection (idle while the workers run) and in
/// read-only chunks (`ChunkedCount`), the rows
/// matching `where` outside what is still being walked (the open ranges' intervals at that
/// moment), while the workers finish. After the walk only those intervals are checked, through
/// the key's index. A row that changes behind the walk after the early count is found by no
/// check, as a row that changes after the end check never is. The default, 5 % of the keys, is
/// about as long as a sequential scan of the table takes next to a walk of it through the
/// index (about 20 times faster here), so that window is about the scan's own length, as it
/// was when the scan ran after the walk.
final class EndCheck: Sendable {
    /// What the early count found: the intervals it left out and the rows matching outside them.
    struct Early: Sendable {
        var intervals: [KeyInterval]
        var matching: Int64
    }

    private enum Phase {
        case watching
        case counting(CancelToken?)
        case counted(Early)
        case over
    }

    private let spec: JobSpec
    private let plan: JobPlan
    private let store: CheckpointStore
    private let borrowed: Borrowed
    private let startWhenLeft: Double
    private let limit: Int64
    private let phase = Mutex<(phase: Phase, stop: Bool)>((.watching, false))
    private let ended = DispatchSemaphore(value: 0)

    /// The coordinator's connection, used by the watch's thread alone from `start` until
    /// `finish` returns: the coordinator waits for the workers meanwhile and does not touch it.
    final class Borrowed: @unchecked Sendable {
        let db: Connection
        init(_ db: Connection) { self.db = db }
    }

    init(spec: JobSpec, plan: JobPlan, store: CheckpointStore, borrowing borrowed: Borrowed,
         startWhenLeft: Double = 0.05, limit: Int64 = 1000) {
        self.spec = spec
        self.plan = plan
        self.store = store
        self.borrowed = borrowed
        self.startWhenLeft = startWhenLeft
        self.limit = limit
    }

    /// Starts watching the walk on a thread of its own.
    func start() {
        let thread = Thread { [self] in
            defer { ended.signal() }
            let early = try? watch()
            phase.withLock { $0.phase = early.map(Phase.counted) ?? .over }
        }
        thread.start()
    }

    /// Ends the watch once the walk is over: waits for a count in flight (cancelling it when
    /// `cancel`) and returns what it found, or nil when no early count was made.
    func finish(cancel: Bool) -> Early? {
        let token: CancelToken? = phase.withLock { state in
            if cancel { state.stop = true }
            if case .counting(let token) = state.phase { return token }
            state.stop = true
            return nil
        }
        if cancel { token?.cancel() }
        ended.wait()
        return phase.withLock { state in
            if case .counted(let early) = state.phase { return early }
            return nil
        }
    }

    /// Polls the ranges every 100 ms; once few enough keys are left (`Unwalked.keysLeft`), counts
    /// outside them.
    private func watch() throws -> Early? {
        let db = borrowed.db
        // Before PostgreSQL 14 a count outside the open ranges is one statement over the table:
        // the end check then runs after the walk, in key chunks.
        guard db.serverVersion >= 140_000 else { return nil }
        // The key's two ends (read from its index), for the estimate of what is left.
        let bounds = try plan.keyBounds(on: db)
        while !phase.withLock({ $0.stop }) {
            let unwalked = try store.unwalked(spec.name, db: db)
            let intervals = unwalked.open.map(\.interval)
            if intervals.isEmpty || unwalked.keys <= 0 { return nil }
            if Double(unwalked.keysLeft(bounds: bounds)) <= Double(unwalked.keys) * startWhenLeft {
                let started = phase.withLock { state -> Bool in
                    guard !state.stop else { return false }
                    state.phase = .counting(db.makeCancelToken())
                    return true
                }
                guard started else { return nil }
                let matching = try Self.count(.outside(intervals), spec: spec, statements: plan.statements, store: store, limit: limit, db: db,
                                              cancelled: { self.phase.withLock { $0.stop } })
                return Early(intervals: intervals, matching: matching)
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return nil
    }

    /// Rows still matching `where` after the walk, at most `limit`: the early count plus each
    /// interval it left out, read through the key's index.
    static func remaining(after early: Early, spec: JobSpec, statements: BatchStatements, store: CheckpointStore, limit: Int64, db: Connection) throws -> Int64 {
        var found = early.matching
        for interval in early.intervals where found < limit {
            found += try count(.within(interval), spec: spec, statements: statements, store: store, limit: limit - found, db: db)
        }
        return found
    }

    /// Rows matching `where` in `scope` (at most `limit`), quarantined keys left out, counted in
    /// chunks (`ChunkedCount`), each a read-only transaction under the session pins and the
    /// job's `timeouts.statement_ms`: by heap pages on PostgreSQL 14+, by keys within an interval
    /// (through the key's index) and, before 14, over the whole key space.
    static func count(_ scope: BatchStatements.RemainingScope, spec: JobSpec, statements: BatchStatements, store: CheckpointStore,
                      limit: Int64, db: Connection, settings: [String] = [], cancelled: @escaping () -> Bool = { false }) throws -> Int64 {
        guard let sql = statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: scope) else { return 0 }
        let chunks = ChunkedCount(table: statements.table, statementMs: spec.timeouts.statementMs, db: db, cancelled: cancelled)
        func byKeys(_ interval: KeyInterval) throws -> Int64 {
            try chunks.overKeys(interval, statements: statements, limit: limit, settings: ["enable_seqscan = off"] + settings) { part, left in
                (statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: .within(part)) ?? sql,
                 [.int(left ?? limit), .text(spec.name)] + KeyInterval.parameters([part]))
            }
        }
        switch scope {
        case .within(let interval): return try byKeys(interval)
        case .all where !chunks.byPages: return try byKeys(KeyInterval(lower: nil, upper: nil))
        case .outside where !chunks.byPages:
            // Before 14 no early count is made (`watch`); this is its one-statement form.
            return try Planner.inReadOnlyTransaction(settings: SessionPins.settings + settings, on: db) {
                try db.query(sql, [.int(limit), .text(spec.name)] + scope.parameters).first?["n"].int64 ?? 0
            }
        case .all, .outside:
            let paged = statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: scope, pages: true) ?? sql
            return try chunks.overPages(paged, [.int(limit), .text(spec.name)] + scope.parameters, limit: limit, limitAt: 0, settings: settings)
        }
    }
}
