import Foundation
import PostgresClient
import Synchronization

/// The end check, overlapped with the end of the walk. The check that no row still matches
/// `where` is a full scan; run after the last batch, it adds its whole time to every run. Instead,
/// a thread of its own counts, on the coordinator's connection (idle while the workers run) and
/// in read-only chunks (`ChunkedCount`), the rows matching `where` outside what is still being
/// walked (the open ranges' intervals at that moment), while the workers finish; then it follows
/// the walk, counting through the key's index what was walked since its last look (`chase`).
/// After the walk only the intervals still open at the last look are checked. A row that changes
/// behind the walk after it was counted is found by no check, as a row that changes after the end
/// check never is. When the early count starts is `EndCheckStart`'s decision: once the walk's
/// time left, at its recent pace, is about the count's own time (timed on a first chunk of the
/// table's pages), so that the count ends about when the walk does.
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
    private let limit: Int64
    /// `stop`: the walk is over (no new count starts, the chase ends); `cancel`: the count in
    /// flight is called off too.
    private let phase = Mutex<(phase: Phase, stop: Bool, cancel: Bool)>((.watching, false, false))
    private let ended = DispatchSemaphore(value: 0)
    /// Signalled by `finish`, so that the watch's pause between two looks ends at once.
    private let wake = DispatchSemaphore(value: 0)

    /// The coordinator's connection, used by the watch's thread alone from `start` until
    /// `finish` returns: the coordinator waits for the workers meanwhile and does not touch it.
    final class Borrowed: @unchecked Sendable {
        let db: Connection
        init(_ db: Connection) { self.db = db }
    }

    init(spec: JobSpec, plan: JobPlan, store: CheckpointStore, borrowing borrowed: Borrowed, limit: Int64 = 1000) {
        self.spec = spec
        self.plan = plan
        self.store = store
        self.borrowed = borrowed
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
            state.stop = true
            state.cancel = cancel
            if case .counting(let token) = state.phase { return token }
            return nil
        }
        if cancel { token?.cancel() }
        wake.signal()
        ended.wait()
        return phase.withLock { state in
            if case .counted(let early) = state.phase { return early }
            return nil
        }
    }

    /// Polls the ranges every 100 ms; once `EndCheckStart` says so, counts outside them, then
    /// chases the walk (`chase`).
    private func watch() throws -> Early? {
        let db = borrowed.db
        // Before PostgreSQL 14 a count outside the open ranges is one statement over the table:
        // the end check then runs after the walk, in key chunks.
        guard db.serverVersion >= 140_000 else { return nil }
        // The key's two ends (read from its index), for the estimate of what is left.
        let bounds = try plan.keyBounds(on: db)
        let chunks = ChunkedCount(table: plan.statements.table, statementMs: spec.timeouts.statementMs, db: db)
        let pace = try pageMs(chunks)
        var start = EndCheckStart()
        let began = ContinuousClock.now
        while !phase.withLock({ $0.stop }) {
            let unwalked = try store.unwalked(spec.name, db: db)
            let intervals = unwalked.open.map(\.interval)
            if intervals.isEmpty || unwalked.keys <= 0 { return nil }
            // The table's size is read only once the walk is close enough for it to matter.
            if try start.shouldStart(atMs: (ContinuousClock.now - began).milliseconds, keysLeft: unwalked.keysLeft(bounds: bounds), keys: unwalked.keys,
                                     countMs: try pace.map { Double(try chunks.pages()) * $0 }) {
                let started = phase.withLock { state -> Bool in
                    guard !state.stop else { return false }
                    state.phase = .counting(db.makeCancelToken())
                    return true
                }
                guard started else { return nil }
                let matching = try Self.count(.outside(intervals), spec: spec, statements: plan.statements, store: store, limit: limit, db: db,
                                              cancelled: { self.phase.withLock { $0.cancel } })
                return chase(Early(intervals: intervals, matching: matching), from: unwalked, db: db)
            }
            pause()
        }
        return nil
    }

    /// After the early count, while the walk goes on: counts, through the key's index, what the
    /// walk has walked since the last look (`Unwalked.walked(since:)`), so that after the walk
    /// only what it walked during the last of these counts is left to read, not everything it
    /// walked since the early count (a fifth of the table read through the index took longer
    /// than the early count itself). A failed look keeps what was counted before it.
    private func chase(_ early: Early, from unwalked: Unwalked, db: Connection) -> Early {
        var early = early, last = unwalked
        while early.matching < limit {
            if phase.withLock({ $0.stop }) { break }
            pause(ms: 25)
            guard let now = try? store.unwalked(spec.name, db: db) else { break }
            var found = early.matching
            do {
                for part in now.walked(since: last) where found < limit {
                    found += try Self.count(.within(part), spec: spec, statements: plan.statements, store: store, limit: limit - found, db: db,
                                            cancelled: { self.phase.withLock { $0.cancel } })
                }
            } catch {
                break
            }
            early = Early(intervals: now.open.map(\.interval), matching: found)
            last = now
        }
        return early
    }

    /// A pause between two looks at the ranges (100 ms while watching; 25 ms while chasing, so that
    /// little is walked between the last look and the walk's end), cut short by `finish`.
    private func pause(ms: Int = 100) { _ = wake.wait(timeout: .now() + .milliseconds(ms)) }

    /// How long the count takes a heap page: a first chunk of up to `EndCheckStart.probePages`
    /// pages counted and timed (its count is not kept); nil for an empty table.
    private func pageMs(_ chunks: ChunkedCount) throws -> Double? {
        guard let sql = plan.statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: .all, pages: true) else { return nil }
        let pages = min(try chunks.pages(), EndCheckStart.probePages)
        guard pages > 0 else { return nil }
        let began = ContinuousClock.now
        _ = try chunks.chunk(sql.binding([BatchStatements.Slots.limit: .int(Int64.max), BatchStatements.Slots.pageStart: .text("(0,0)"),
                                          BatchStatements.Slots.pageEnd: .text("(\(pages),0)")]))
        return (ContinuousClock.now - began).milliseconds / Double(pages)
    }

    /// A physical walk's end check: rows still matching `where` (at most `limit`), quarantined
    /// rows left out, read in page chunks of each heap (each partition of a partitioned table),
    /// and the pages that hold them, by heap. `pages` is nil when the limit was reached: the
    /// pages are then not all known, and the catch-up pass walks every page.
    static func stragglers(spec: JobSpec, plan: JobPlan, store: CheckpointStore, limit: Int64, db: Connection) throws -> (rows: Int64, pages: [String: [Int64]]?) {
        var rows: Int64 = 0
        var pages: [String: [Int64]] = [:]
        for heap in plan.heaps where rows < limit {
            let statements = plan.statements(for: heap)
            guard let sql = statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: .all, pages: true, byPage: true) else { continue }
            rows += try ChunkedCount(table: heap, statementMs: spec.timeouts.statementMs, db: db).overPages(sql, limit: limit - rows) { chunk in
                let found = try db.query(chunk).rows
                pages[heap, default: []] += found.compactMap { $0["page"].int64 }
                return found.reduce(0) { $0 + ($1["n"].int64 ?? 0) }
            }
        }
        return (rows, rows < limit ? pages : nil)
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
                (statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: .within(part)) ?? sql)
                    .binding(BatchStatements.Slots.limit, to: .int(left ?? limit))
            }
        }
        switch scope {
        case .within(let interval): return try byKeys(interval)
        case .all where !chunks.byPages: return try byKeys(KeyInterval(lower: nil, upper: nil))
        case .outside where !chunks.byPages:
            // Before 14 no early count is made (`watch`); this is its one-statement form.
            return try Planner.inReadOnlyTransaction(settings: SessionPins.settings + settings, on: db) {
                try db.query(sql.binding(BatchStatements.Slots.limit, to: .int(limit))).first?["n"].int64 ?? 0
            }
        case .all, .outside:
            let paged = statements.remainingCount(spec: spec, excludingBadRowsIn: store.badRowsTable, scope: scope, pages: true) ?? sql
            return try chunks.overPages(paged, limit: limit, settings: settings)
        }
    }
}

/// When the early count of the end check starts (`EndCheck`). Pure: fed the keys left to walk
/// every poll, it keeps the walk's pace (keys a millisecond over the last `paceWindowMs`) and
/// says start once the walk's time left at that pace is at most `margin` × the count's expected
/// time (the table's pages × the probe's time a page), or at the latest when `latest` of the
/// keys are left (also when the pace or the count's time is unknown), never while more than
/// `earliest` are: the early count leaves the rows that change behind the walk after it to the
/// next run, so its window stays short.
struct EndCheckStart: Sendable, Hashable {
    static let latest = 0.05
    static let earliest = 0.25
    static let margin = 1.25
    static let paceWindowMs = 2000.0
    /// Pages the probe counts to time the count.
    static let probePages: Int64 = 512

    private struct Sample: Sendable, Hashable {
        var ms: Double
        var left: Int64
    }
    private var samples: [Sample] = []

    /// Whether to start now, `atMs` into the watch, with `keysLeft` of `keys` left to walk and
    /// the count expected to take `countMs` (asked only within `earliest`).
    mutating func shouldStart(atMs ms: Double, keysLeft: Int64, keys: Int64, countMs: @autoclosure () throws -> Double?) rethrows -> Bool {
        samples.append(Sample(ms: ms, left: keysLeft))
        samples.removeAll { ms - $0.ms > Self.paceWindowMs }
        let left = Double(keysLeft), total = Double(max(keys, 1))
        if left <= total * Self.latest { return true }
        guard left <= total * Self.earliest, let first = samples.first, ms - first.ms >= Self.paceWindowMs / 2, let countMs = try countMs() else { return false }
        let pace = Double(first.left - keysLeft) / (ms - first.ms)
        guard pace > 0 else { return false }
        return left / pace <= Self.margin * countMs
    }
}
