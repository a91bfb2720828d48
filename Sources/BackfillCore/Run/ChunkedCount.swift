import Foundation
import PostgresClient

/// How many heap pages (or keys) the next chunk of a chunked count reads: aimed at `targetMs`,
/// growing at most fourfold and shrinking at most by half a step, halved after a statement
/// timeout. Pure.
struct ChunkSizer: Sendable, Hashable {
    private(set) var size: Int
    let targetMs: Double
    let maxSize: Int
    /// Statement timeouts in a row; a chunk that times out this often at size 1 gives up.
    private(set) var timeouts = 0
    static let maxTimeouts = 8

    init(start: Int, targetMs: Double, maxSize: Int = 1 << 30) {
        size = max(1, min(start, maxSize))
        self.targetMs = targetMs
        self.maxSize = maxSize
    }

    /// A chunk of `size` read in `ms`.
    mutating func done(ms: Double) {
        timeouts = 0
        let aimed = ms > 0 ? Double(size) * targetMs / ms : Double(size) * 4
        size = min(maxSize, max(1, Int(min(max(aimed, Double(size) / 2), Double(size) * 4))))
    }

    /// A chunk hit the statement timeout; false when it has done so too often to go on.
    mutating func timedOut() -> Bool {
        timeouts += 1
        size = max(1, size / 2)
        return timeouts <= Self.maxTimeouts
    }
}

/// Counts that read a whole table (the end check, `verify`) in chunks, each a short read-only
/// transaction whose statement runs under the job's `timeouts.statement_ms`, whatever the role's
/// or the database's `statement_timeout`: a table of any size is counted without one long
/// statement, and a chunk that times out is halved and read again. On PostgreSQL 14 and later a
/// chunk is a range of heap pages (`ctid >= '(p,0)' AND ctid < '(p+k,0)'`, a TID Range Scan: the
/// chunks together read the table as one sequential scan would); earlier, and within a key
/// interval, it is a range of keys read through the key's index. Each chunk sees the rows
/// committed when it starts (READ COMMITTED), so no snapshot is held for the whole count.
struct ChunkedCount {
    let table: String
    let statementMs: Int
    let db: Connection
    /// Whether the count was called off (`EndCheck.finish(cancel:)`): it then throws, before the
    /// next chunk or when a chunk was cancelled, rather than retry or return a partial sum.
    var cancelled: () -> Bool = { false }

    /// What a chunk aims at: a fifth of the statement timeout.
    var targetMs: Double { Double(statementMs) / 5 }

    /// Whether chunks can be page ranges (TID Range Scan, PostgreSQL 14+).
    var byPages: Bool { db.serverVersion >= 140_000 }

    /// The table's size in pages (the largest partition's, for a partitioned table).
    func pages() throws -> Int64 { try CheckpointStore.heapPages(table, db: db) }

    /// Sums `sql` (a count `n` over a page range, `BatchStatements.pageRange`, whose slots each
    /// chunk binds) over every page of the table, stopping once `limit` is reached. With a
    /// `limit`, `sql`'s `BatchStatements.Slots.limit` is the chunk's limit, lowered as rows are
    /// found.
    /// `read` runs one chunk's bound statement and returns its rows (the chunk's `n` unless given).
    func overPages(_ sql: SQL, limit: Int64?, settings: [String] = [], read: ((SQL) throws -> Int64)? = nil) throws -> Int64 {
        var sizer = ChunkSizer(start: 1024, targetMs: targetMs)
        var found: Int64 = 0
        var start: Int64 = 0
        var end = try pages()
        while limit.map({ found < $0 }) ?? true {
            // At the end, the size again: pages added during the count are read too.
            if start >= end {
                end = try pages()
                if start >= end { break }
            }
            let stop = start + Int64(sizer.size)
            var values: [SQL.Slot: PostgresValue] = [BatchStatements.Slots.pageStart: .text("(\(start),0)"), BatchStatements.Slots.pageEnd: .text("(\(stop),0)")]
            if let limit { values[BatchStatements.Slots.limit] = .int(limit - found) }
            let bound = sql.binding(values)
            guard let n = try attempt(&sizer, { try read.map { read in try Planner.inReadOnlyTransaction(settings: chunkSettings(settings), on: db) { try read(bound) } } ?? chunk(bound, settings: settings) })
            else { continue }
            found += n
            start = stop
        }
        return found
    }

    /// Sums `count` over `interval` in key ranges read through the key's index: each chunk's
    /// upper key is read first (`statements.upperBound`), then `count` runs on the chunk's
    /// interval. Stops once `limit` is reached.
    func overKeys(_ interval: KeyInterval, statements: BatchStatements, limit: Int64?, settings: [String] = [],
                  count: (KeyInterval, Int64?) throws -> SQL) throws -> Int64 {
        var sizer = ChunkSizer(start: 100_000, targetMs: targetMs)
        var found: Int64 = 0
        var cursor = interval.lower
        while limit.map({ found < $0 }) ?? true {
            let upperSQL = statements.upperBound(after: cursor, below: interval.upper, offset: Int64(sizer.size - 1))
            let size = sizer.size
            let read = try attempt(&sizer) { () -> (n: Int64, upper: [String]?, last: Bool) in
                try Planner.inReadOnlyTransaction(settings: chunkSettings(settings), on: db) {
                    guard let row = try db.query(upperSQL).first else { return (0, nil, true) }
                    let upper = statements.upperKey(row)
                    let n = try db.query(count(KeyInterval(lower: cursor, upper: upper.key), limit.map { $0 - found })).first?["n"].int64 ?? 0
                    return (n, upper.key, upper.walked < size)
                }
            }
            guard let step = read else { continue }
            found += step.n
            guard let upper = step.upper, !step.last else { break }
            cursor = upper
        }
        return found
    }

    /// Reads one chunk of the sizer's size, then tells the sizer how long it took; nil when the
    /// chunk hit the statement timeout and is to be read again at half the size. Throws when the
    /// count was called off, and after too many timeouts in a row.
    private func attempt<T>(_ sizer: inout ChunkSizer, _ read: () throws -> T) throws -> T? {
        if cancelled() { throw PostgresError(code: .queryCanceled, severity: "CLIENT", message: "the count was called off") }
        let began = ContinuousClock.now
        do {
            let value = try read()
            sizer.done(ms: (ContinuousClock.now - began).milliseconds)
            return value
        } catch let error as PostgresError where error.code == .queryCanceled && !cancelled() {
            guard sizer.timedOut() else { throw error }
            return nil
        }
    }

    private func chunkSettings(_ settings: [String]) -> [String] {
        ["statement_timeout = '\(statementMs)ms'"] + SessionPins.settings + settings
    }

    /// One chunk's count, in a read-only transaction of its own under the chunk settings.
    func chunk(_ sql: SQL, settings: [String] = []) throws -> Int64 {
        try Planner.inReadOnlyTransaction(settings: chunkSettings(settings), on: db) {
            try db.query(sql).first?["n"].int64 ?? 0
        }
    }
}
