import Foundation
import PostgresClient
import Synchronization

/// What the workers of a run need from a checkpoint store. `CheckpointStore` keeps it in
/// PostgreSQL, in the batch's own transaction; `MemoryStore` keeps it in the process for dry runs
/// (rehearsals that must not change the database), whose batches are rolled back.
protocol RunStore: Sendable {
    /// Opens the batch transaction and claims a range for it in one round trip: `opening`
    /// (`BEGIN` and the batch's `SET LOCAL`s) and the claim are sent together. Nil when every open
    /// range is in another transaction.
    func open(_ opening: [Connection.Statement], job: String, preferring preferred: Int?, db: Connection) throws -> RangeClaim?
    /// Marks the range walked to its end, inside the batch transaction.
    func completeRange(_ job: String, range: Int, db: Connection) throws
    /// The range's checkpoint `UPDATE`, for the batch statement (as a CTE) or to send after it,
    /// with `rows`, `outside` and (a physical walk's) `stillMatching` as SQL expressions; nil for a store that keeps the checkpoint in
    /// memory.
    func checkpoint(_ job: String, range: Int, lastKey: [String], keys: Int, worker: String, rows: SQL, outside: SQL, stillMatching: SQL?) -> SQL?
    /// Moves a checkpoint kept in memory once the batch is done (nothing for the PostgreSQL store,
    /// whose checkpoint moved inside the batch transaction).
    func moved(_ job: String, range: Int, lastKey: [String])
    /// With `journal: true`: the INSERT of a batch's changed rows into the journal, a CTE of the
    /// batch statement; nil when nothing is committed.
    func journal(_ job: String) -> SQL?
    /// What ends the batch transaction: `COMMIT` (the checkpoint moves with the data), or
    /// `ROLLBACK` for a store that must change nothing.
    var closing: String { get }
    func openRanges(_ job: String, db: Connection) throws -> Int
    func splitLargestRange(_ job: String, plan: JobPlan, minimumRows: Int64, db: Connection) throws -> Bool
    func heartbeat(_ job: String, worker: String, range: Int?, rowsDone: Int64, rowsPerSecond: Double, db: Connection) throws
    /// Takes `rows` from the job's rate budget; returns how many seconds to wait.
    func consumeRate(_ job: String, rows: Int64, rowsPerSecond: Int, db: Connection) throws -> Double
    /// Takes the WAL written since the last charge from the job's WAL budget; returns how many
    /// seconds to wait.
    func consumeWal(_ job: String, mbPerSecond: Int, db: Connection) throws -> Double
    func setThrottle(_ job: String, reason: String?, detail: String?, db: Connection) throws
    func state(_ job: String, db: Connection) throws -> JobState?
    /// Records a row that cannot be written (`on_error: skip`), inside the batch transaction
    /// that moves the checkpoint past its key; returns the job's bad rows, this one included.
    func quarantine(_ job: String, range: Int, key: [String], error: PostgresError, worker: String, db: Connection) throws -> Int64
}

extension RunStore {
    /// Records that the job is no longer throttled, or a reason without a detail.
    func setThrottle(_ job: String, reason: String?, db: Connection) throws {
        try setThrottle(job, reason: reason, detail: nil, db: db)
    }
}

extension CheckpointStore: RunStore {
    var closing: String { "COMMIT" }
    func moved(_ job: String, range: Int, lastKey: [String]) {}
}

/// A store in memory for dry runs: one range over the whole table, its position kept in the
/// process, a rate budget of its own, the bad rows found; every batch is rolled back.
final class MemoryStore: RunStore {
    private struct State {
        var lastKey: [String]?
        var done = false
        var limiter: RateLimiter
        var wal: WalBudget?
        var badKeys: Set<[String]> = []
    }
    private let state: Mutex<State>
    private let started = ContinuousClock.now

    init(rowsPerSecond: Int) {
        state = Mutex(State(limiter: RateLimiter(rowsPerSecond: rowsPerSecond)))
    }

    func open(_ opening: [Connection.Statement], job: String, preferring preferred: Int?, db: Connection) throws -> RangeClaim? {
        _ = try db.pipeline(opening)
        return state.withLock { $0.done ? nil : RangeClaim(range: 0, lower: $0.lastKey, ceiling: nil, jobState: .running) }
    }

    func completeRange(_ job: String, range: Int, db: Connection) throws { state.withLock { $0.done = true } }

    func checkpoint(_ job: String, range: Int, lastKey: [String], keys: Int, worker: String, rows: SQL, outside: SQL, stillMatching: SQL?) -> SQL? { nil }

    func moved(_ job: String, range: Int, lastKey: [String]) { state.withLock { $0.lastKey = lastKey } }

    func journal(_ job: String) -> SQL? { nil }

    var closing: String { "ROLLBACK" }

    func openRanges(_ job: String, db: Connection) throws -> Int { state.withLock { $0.done ? 0 : 1 } }

    func splitLargestRange(_ job: String, plan: JobPlan, minimumRows: Int64, db: Connection) throws -> Bool { false }

    func heartbeat(_ job: String, worker: String, range: Int?, rowsDone: Int64, rowsPerSecond: Double, db: Connection) throws {}

    func consumeRate(_ job: String, rows: Int64, rowsPerSecond: Int, db: Connection) throws -> Double {
        let now = (ContinuousClock.now - started).seconds
        return state.withLock { $0.limiter.consume(rows: Int(rows), now: now) }
    }

    func consumeWal(_ job: String, mbPerSecond: Int, db: Connection) throws -> Double {
        guard let lsn = try db.query("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn").first?["lsn"].int64 else { return 0 }
        let now = (ContinuousClock.now - started).seconds
        return state.withLock { state in
            var budget = state.wal ?? WalBudget(mbPerSecond: mbPerSecond)
            defer { state.wal = budget }
            return budget.observe(lsn: UInt64(max(lsn, 0)), now: now)
        }
    }

    func setThrottle(_ job: String, reason: String?, detail: String?, db: Connection) throws {}

    func state(_ job: String, db: Connection) throws -> JobState? { .running }

    func quarantine(_ job: String, range: Int, key: [String], error: PostgresError, worker: String, db: Connection) throws -> Int64 {
        state.withLock { $0.badKeys.insert(key); return Int64($0.badKeys.count) }
    }
}
