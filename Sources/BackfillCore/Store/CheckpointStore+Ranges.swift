import Foundation
import PostgresClient

/// The ranges of a job: created at quantiles of a key sample, claimed one batch at a time, moved
/// in the batch's own transaction, split when every range is busy.
extension CheckpointStore {
    /// Splits the key space at quantiles of a sample of the key (read through TABLESAMPLE, so it
    /// works for any key type and for skewed keys) and stores the ranges.
    func createRanges(_ job: String, plan: JobPlan, workers: Int, db: Connection) throws {
        if plan.spec.walk == .physical { return try createPageRanges(job, plan: plan, workers: workers, db: db) }
        let count = RangeSplitter.rangeCount(estimatedRows: plan.estimatedRows, workers: workers)
        let sample = count > 1 ? try plan.sampleKeys(on: db) : []
        let bounds = RangeSplitter.boundaries(sample: sample, count: count)
        let perRange = (plan.estimatedRows ?? 0) / Int64(bounds.count + 1)
        for i in 0...bounds.count {
            try db.query(
                "INSERT INTO \(ranges) (job, range_id, lower_key, upper_key, estimated_rows) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)",
                [.text(job), .int(Int64(i)), i == 0 ? .null : .text(Self.encodeKey(bounds[i - 1])),
                 i == bounds.count ? .null : .text(Self.encodeKey(bounds[i])), .int(perRange)])
        }
    }

    /// Opens the batch transaction and claims a range for it, in one round trip: `opening` and
    /// the claim go out as one pipeline. The claim locks the range's row (`FOR UPDATE SKIP
    /// LOCKED`) for the rest of the batch transaction and reads its checkpoint and the job's
    /// state. Nil when another transaction holds every open range. For a run's own store it also
    /// checks, in the same statement, that the job's spec hash is the run's and that the run's
    /// lease row still carries its token; otherwise it throws `LeaseLost` and no batch starts.
    public func open(_ opening: [Connection.Statement], job: String, preferring preferred: Int?, db: Connection) throws -> RangeClaim? {
        let token = leaseWatch?.token
        let claim = Connection.Statement(
            """
            SELECT r.range_id, r.lower_key::text AS lower_key, r.upper_key::text AS upper_key, r.last_key::text AS last_key, r.relation, j.state,
                   (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS wal_lsn, pg_backend_pid() AS backend_pid,
                   \(Self.tuningColumns("j")),
                   $3::text IS NULL OR j.spec_hash = $3 AS same_spec,
                   $4::text IS NULL OR EXISTS (SELECT 1 FROM \(leases) l WHERE l.job = $1 AND l.token = $4) AS leased
            FROM \(jobs) j LEFT JOIN LATERAL (
                SELECT * FROM \(ranges) r WHERE r.job = j.name AND NOT r.done
                ORDER BY r.range_id = $2 DESC, r.range_id
                LIMIT 1 FOR UPDATE SKIP LOCKED) r ON true
            WHERE j.name = $1
            """, [.text(job), .int(Int64(preferred ?? -1)), leaseWatch.map { .text($0.specHash) } ?? .null, token.map { .text($0) } ?? .null], prepared: true)
        var pipeline = Pipeline(opening)
        let claimed = pipeline.append(claim)
        guard let row = try db.run(pipeline)[claimed].first else { return nil }
        if row["same_spec"].bool == false { throw leaseLost("the job was started over with a different job file by another runner") }
        if row["leased"].bool == false { throw leaseLost("the lease row was taken by another runner or removed by `backfill unlock`") }
        guard let range = row["range_id"].int else { return nil }
        return RangeClaim(
            range: range,
            lower: try (row["last_key"].string ?? row["lower_key"].string).map(Self.decodeKey),
            ceiling: try row["upper_key"].string.map(Self.decodeKey),
            jobState: JobState(rawValue: row["state"].string ?? "") ?? .running,
            relation: row["relation"].string,
            tuning: Self.tuning(in: row),
            walPosition: row["wal_lsn"].int64,
            backendPID: row["backend_pid"].int.map(Int32.init))
    }

    private func leaseLost(_ reason: String) -> LeaseLost {
        leaseWatch?.markLost(reason)
        return LeaseLost(reason: reason)
    }

    /// How many of the job's ranges are not walked to their end yet.
    public func openRanges(_ job: String, db: Connection) throws -> Int {
        try db.query("SELECT count(*) FILTER (WHERE NOT done)::int AS n FROM \(ranges) WHERE job = $1", [.text(job)]).first?["n"].int ?? 0
    }

    /// What a pass has left to walk: each open range's unwalked interval (after its checkpoint up
    /// to its ceiling) with what it has walked and its estimate, and the keys of all ranges (by
    /// their estimates, or what they walked when more).
    public func unwalked(_ job: String, db: Connection) throws -> Unwalked {
        let rows = try db.query(
            """
            SELECT range_id, lower_key::text AS start, last_key::text AS last, upper_key::text AS upper, done, keys_walked,
                   coalesce(estimated_rows, 0) AS estimated
            FROM \(ranges) WHERE job = $1 ORDER BY range_id
            """, [.text(job)]).rows
        var result = Unwalked(open: [], keys: 0)
        for row in rows {
            let walked = row["keys_walked"].int64 ?? 0, estimated = row["estimated"].int64 ?? 0
            result.keys += max(walked, estimated)
            let start = try row["start"].string.map(Self.decodeKey)
            let position = Unwalked.Position(start: start, last: try row["last"].string.map(Self.decodeKey),
                                             ceiling: try row["upper"].string.map(Self.decodeKey), done: row["done"].bool ?? false)
            if let id = row["range_id"].int { result.positions[id] = position }
            guard !position.done else { continue }
            result.open.append(Unwalked.Range(interval: KeyInterval(lower: position.last ?? start, upper: position.ceiling),
                                              start: start, walked: walked, estimated: estimated))
        }
        return result
    }

    /// Work stealing: splits the open range with the most rows left (by its estimate) in two at
    /// its middle key, so that an idle worker can take the second half. Waits for the range's
    /// current batch (its row lock) and reads its committed checkpoint, so no key is skipped or
    /// walked twice. Returns false when no range is worth splitting (fewer than `minimumRows` left).
    public func splitLargestRange(_ job: String, plan: JobPlan, minimumRows: Int64, db: Connection) throws -> Bool {
        do {
            return try split(job, plan: plan, minimumRows: minimumRows, db: db)
        } catch let error as PostgresError where error.code == .uniqueViolation || error.code == .lockNotAvailable {
            return false  // another worker split at the same moment: no split this time
        }
    }

    private func split(_ job: String, plan: JobPlan, minimumRows: Int64, db: Connection) throws -> Bool {
        try db.transaction { db in
            // One split at a time per job: the job row's lock serialises them, so two idle workers
            // never pick the same new range number.
            try db.execute("SET LOCAL lock_timeout = '2s'; " + SessionPins.statements)
            guard try db.query("SELECT 1 FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(job)]).first != nil else { return false }
            guard let row = try db.query(
                """
                SELECT range_id, coalesce(last_key, lower_key)::text AS lower, upper_key::text AS ceiling,
                       greatest(coalesce(estimated_rows, 0) - keys_walked, 0)::bigint AS remaining
                FROM \(ranges) WHERE job = $1 AND NOT done
                ORDER BY greatest(coalesce(estimated_rows, 0) - keys_walked, 0) DESC, range_id LIMIT 1
                """, [.text(job)]).first,
                let range = row["range_id"].int
            else { return false }
            // Lock it (after the batch in flight commits) and read the committed position again.
            guard let locked = try db.query(
                "SELECT coalesce(last_key, lower_key)::text AS lower, upper_key::text AS ceiling, done, greatest(coalesce(estimated_rows, 0) - keys_walked, 0)::bigint AS remaining FROM \(ranges) WHERE job = $1 AND range_id = $2 FOR UPDATE",
                [.text(job), .int(Int64(range))]).first, locked["done"].bool == false
            else { return false }
            let remaining = locked["remaining"].int64 ?? 0
            guard remaining >= minimumRows else { return false }
            let lower = try locked["lower"].string.map(Self.decodeKey)
            let ceiling = try locked["ceiling"].string.map(Self.decodeKey)
            // The split point: the middle of what is left, but never more than `splitSearchLimit`
            // keys into the range, so that finding it is a short index walk under the range's lock
            // (the idle worker then takes the larger rest, which can be split again).
            // Pages: the middle page of what is left, by arithmetic.
            let keep = plan.spec.walk == .physical ? remaining / 2 : min(remaining / 2, Self.splitSearchLimit)
            let middle: [String]?
            if plan.spec.walk == .physical {
                middle = BatchStatements.pageBatch(after: lower, ceiling: ceiling, pages: Int(keep))?.upper
            } else {
                middle = try db.query(plan.statements.upperBound(after: lower, below: ceiling, offset: keep)).first.map { plan.statements.upperKey($0).key }
            }
            guard let mid = middle, mid != ceiling else { return false }
            let next = try db.query("SELECT max(range_id) + 1 AS id FROM \(ranges) WHERE job = $1", [.text(job)]).first?["id"].int ?? 0
            try db.query(
                "UPDATE \(ranges) SET upper_key = $3::jsonb, estimated_rows = keys_walked + $4 WHERE job = $1 AND range_id = $2",
                [.text(job), .int(Int64(range)), .text(Self.encodeKey(mid)), .int(keep)])
            try db.query(
                "INSERT INTO \(ranges) (job, range_id, lower_key, upper_key, estimated_rows, relation, catch_up) SELECT $1, $2, $3::jsonb, $4::jsonb, $5, relation, catch_up FROM \(ranges) WHERE job = $1 AND range_id = $6",
                [.text(job), .int(Int64(next)), .text(Self.encodeKey(mid)), ceiling.map { .text(Self.encodeKey($0)) } ?? .null, .int(remaining - keep), .int(Int64(range))])
            return true
        }
    }

    /// A physical walk's ranges: each heap's pages now, `[0, n)`, split evenly
    /// (`RangeSplitter.pageBounds`), heap after heap (a partitioned table's partitions in the
    /// plan's order, so that claims, in range order, walk them one after the other); each range's
    /// estimate and keys walked count pages. A heap's last range ends at `n`, its size as the pass
    /// starts: the walk never follows its own new row versions, nor inserts, past it.
    private func createPageRanges(_ job: String, plan: JobPlan, workers: Int, db: Connection) throws {
        var id: Int64 = 0
        for heap in plan.heaps {
            let pages = try Self.heapPages(heap, db: db)
            let bounds = RangeSplitter.pageBounds(pages: pages, workers: workers, minimumPages: Int64(plan.spec.batch.max))
            for (lower, upper) in zip(bounds, bounds.dropFirst()) {
                try db.query(
                    "INSERT INTO \(ranges) (job, range_id, lower_key, upper_key, estimated_rows, relation) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6)",
                    [.text(job), .int(id), .text(Self.encodeKey(BatchStatements.page(lower))), .text(Self.encodeKey(BatchStatements.page(upper))), .int(upper - lower), .text(heap)])
                id += 1
            }
        }
    }

    /// A physical walk's new pass ends at each heap's size now: the heap's range that ends last is
    /// extended to it, so the pages live updates and inserts added since the last pass started
    /// are walked too. Inside the caller's transaction.
    func extendPageWalk(_ job: String, heaps: [String], db: Connection) throws {
        for heap in heaps {
            let pages = try Self.heapPages(heap, db: db)
            try db.query(
                """
                UPDATE \(ranges) SET upper_key = $2::jsonb, estimated_rows = coalesce(estimated_rows, 0) + ($3::bigint - ((upper_key->>0)::point)[0]::bigint)
                WHERE job = $1 AND range_id = (SELECT range_id FROM \(ranges) WHERE job = $1 AND relation = $4 AND NOT catch_up ORDER BY (upper_key->>0)::tid DESC LIMIT 1)
                  AND (upper_key->>0)::tid < ($2::jsonb->>0)::tid
                """, [.text(job), .text(Self.encodeKey(BatchStatements.page(pages))), .int(pages), .text(heap)])
        }
    }

    /// A table's size in heap pages now (its largest partition's, for a partitioned table; a
    /// partition's own).
    static func heapPages(_ table: String, db: Connection) throws -> Int64 {
        try db.query(
            // pg_partition_tree lists nothing for a table that is not partitioned.
            """
            SELECT (coalesce((SELECT max(pg_relation_size(relid)) FROM pg_partition_tree($1::regclass)), pg_relation_size($1::regclass))
                    / current_setting('block_size')::int)::bigint AS pages
            """,
            [.text(table)]).first?["pages"].int64 ?? 0
    }

    /// At most this many keys are walked to find a split point.
    static let splitSearchLimit: Int64 = 100_000

    /// The checkpoint `UPDATE` of one batch: the range's last key, its counters, and the rows the
    /// batch changed outside its range (`outside`), which the table's check constraint
    /// `ranges_batch_within_range` requires to be 0: a batch whose SQL escaped its range fails
    /// in its own statement and rolls back, even when its `COMMIT` was already sent. `rows` and
    /// `outside` are SQL expressions (over the batch statement's `tally`, or numbers).
    ///
    /// A physical walk's batch also sets `last_batch_still_matching`, the changed rows that still
    /// match `where`, which the check constraint `ranges_batch_leaves_where_false` requires to
    /// be 0: a version the job wrote must never be changed again when the walk reaches its page.
    public func checkpoint(_ job: String, range: Int, lastKey: [String], keys: Int, worker: String, rows: SQL, outside: SQL, stillMatching: SQL? = nil) -> SQL? {
        let still: SQL = stillMatching.map { ", last_batch_still_matching = \($0)" } ?? ""
        return """
        UPDATE \(unescaped: ranges) SET last_key = \(bind: Self.encodeKey(lastKey))::jsonb, rows_done = rows_done + \(rows), keys_walked = keys_walked + \(bind: keys),
            batches = batches + 1, worker = \(bind: worker), last_batch_outside = \(outside)\(still), updated_at = now()
        WHERE job = \(bind: job) AND range_id = \(bind: range)
        """
    }

    /// Sessions waiting on this transaction's locks right now, and the longest any of them has
    /// waited so far (since its statement started); the columns `waiters` and `longest_wait_ms`.
    static let waitersQuery = """
        SELECT count(*)::int AS waiters, coalesce(max(extract(epoch FROM clock_timestamp() - a.query_start)) * 1000, 0)::float8 AS longest_wait_ms \
        FROM pg_stat_get_activity(NULL) a WHERE a.wait_event_type = 'Lock' AND pg_backend_pid() = ANY (pg_blocking_pids(a.pid))
        """

    /// Marks the range walked to its end.
    public func completeRange(_ job: String, range: Int, db: Connection) throws {
        try db.query("UPDATE \(ranges) SET done = true, updated_at = now() WHERE job = $1 AND range_id = $2", [.text(job), .int(Int64(range))])
    }
}

/// What a pass has left to walk (`CheckpointStore.unwalked`).
public struct Unwalked: Sendable, Hashable {
    /// An open range: the interval still to walk (its lower end is the checkpoint), where the
    /// range starts (nil: at the first key), the keys walked so far and the range's estimate.
    public struct Range: Sendable, Hashable {
        public var interval: KeyInterval
        public var start: [String]?
        public var walked: Int64
        public var estimated: Int64

        public init(interval: KeyInterval, start: [String]?, walked: Int64, estimated: Int64) {
            self.interval = interval
            self.start = start
            self.walked = walked
            self.estimated = estimated
        }
    }

    public var open: [Range]
    public var keys: Int64
    /// Where each range stands, done ones too, by range id.
    public var positions: [Int: Position] = [:]

    /// A range of the store as it stands: where it starts, its checkpoint, its ceiling.
    public struct Position: Sendable, Hashable {
        public var start: [String]?
        public var last: [String]?
        public var ceiling: [String]?
        public var done: Bool

        public init(start: [String]?, last: [String]?, ceiling: [String]?, done: Bool) {
            self.start = start
            self.last = last
            self.ceiling = ceiling
            self.done = done
        }
    }

    public init(open: [Range], keys: Int64, positions: [Int: Position] = [:]) {
        self.open = open
        self.keys = keys
        self.positions = positions
    }

    /// The key intervals walked since `earlier`: in each range, from where it stood then (its
    /// checkpoint; its start when the range was split off since) to where it stands now (its
    /// checkpoint, or its ceiling once done). Together with the open intervals now, they make up
    /// the open intervals of `earlier` (a split moves a range's ceiling down to where the new
    /// range starts), so a count of these and, later, of those misses no key.
    public func walked(since earlier: Unwalked) -> [KeyInterval] {
        positions.sorted { $0.key < $1.key }.compactMap { id, now in
            let then = earlier.positions[id]
            if then?.done == true { return nil }
            let from = then.map { $0.last ?? $0.start } ?? now.start
            let to = now.done ? now.ceiling : now.last
            if !now.done && now.last == nil { return nil }       // not started
            if !now.done && from == to { return nil }            // not moved
            return KeyInterval(lower: from, upper: to)
        }
    }

    /// Keys left to walk in the open ranges. A range split at a sample's quantiles is often a
    /// quarter larger or smaller than its estimate, so when the first key column is a number and
    /// the range has walked some keys, its rest is extrapolated from the density it walked:
    /// keys walked × (ceiling − checkpoint) / (checkpoint − start), the range's open ends taken
    /// as the key's `bounds` (min, max). Otherwise its estimate less what it walked.
    public func keysLeft(bounds: (min: Double, max: Double)?) -> Int64 {
        open.reduce(0) { total, range in
            func first(_ key: [String]?) -> Double? { key?.first.flatMap { Double($0) } }
            if range.walked > 0, let bounds, let position = first(range.interval.lower),
               let start = range.start == nil ? bounds.min : first(range.start),
               let end = range.interval.upper == nil ? bounds.max : first(range.interval.upper),
               position > start, end >= position {
                return total + Int64((Double(range.walked) * (end - position) / (position - start)).rounded(.up))
            }
            return total + max(range.estimated - range.walked, 0)
        }
    }
}
