import Foundation
import PostgresClient

/// A job's state in the checkpoint store.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case pending, running, paused, done, failed, cancelled
}

/// One range of a job, for `status`.
public struct RangeStatus: Sendable, Hashable, Codable {
    public var range: Int
    public var lowerKey: [String]?
    public var upperKey: [String]?
    public var lastKey: [String]?
    public var done: Bool
    public var rowsDone: Int64
    public var worker: String?

    enum CodingKeys: String, CodingKey {
        case range, done, worker
        case lowerKey = "lower_key", upperKey = "upper_key", lastKey = "last_key", rowsDone = "rows_done"
    }
}

/// A worker that reported progress in the last 30 seconds, for `status`.
public struct WorkerStatus: Sendable, Hashable, Codable {
    public var worker: String
    public var range: Int?
    public var rowsDone: Int64
    public var rowsPerSecond: Double
    public var lastSeen: Date?

    enum CodingKeys: String, CodingKey {
        case worker, range
        case rowsDone = "rows_done", rowsPerSecond = "rows_per_second", lastSeen = "last_seen"
    }
}

/// One row of `status`: a job and its progress, summed over its ranges.
public struct JobStatus: Sendable, Hashable, Codable {
    public var name: String
    public var state: JobState
    public var table: String
    public var rowsDone: Int64
    public var batches: Int64
    public var lastKey: [String]?
    public var lastError: String?
    public var runner: String?
    public var pausedBy: String?
    public var pausedAt: Date?
    public var startedAt: Date?
    public var updatedAt: Date?
    public var finishedAt: Date?
    public var rangesDone: Int
    public var ranges: Int
    /// Why the job is paused by a throttle right now (`replication_lag`, `check_sql`, `autovacuum`).
    public var throttleReason: String?
    public var throttledSince: Date?
    /// Per-range progress (filled when one job is asked for).
    public var rangeList: [RangeStatus]?
    /// Workers seen in the last 30 s (filled when one job is asked for).
    public var workers: [WorkerStatus]?
    /// Set when the store says `running` but no runner holds the lease and no worker reported in
    /// the last 30 s (a runner killed with -9, a lost host): when it was last seen. `state` is
    /// then `pending`: run it again to resume.
    public var noRunnerSince: Date?
    /// Which pass over the key space the job is in (catch-up passes and `repeat` add passes).
    public var pass: Int = 1

    enum CodingKeys: String, CodingKey {
        case name, state, table, batches, runner, ranges
        case rowsDone = "rows_done", lastKey = "last_key", lastError = "last_error", pausedBy = "paused_by"
        case pausedAt = "paused_at", startedAt = "started_at", updatedAt = "updated_at", finishedAt = "finished_at"
        case rangesDone = "ranges_done", throttleReason = "throttle_reason", throttledSince = "throttled_since"
        case rangeList = "range_list", workers, noRunnerSince = "no_runner_since", pass
    }
}

/// Who was waiting on a batch's locks as it ended.
public struct Waiters: Sendable, Hashable {
    public var count: Int
    public var longestMs: Double

    init(_ row: PostgresRow?) {
        count = row?["waiters"].int ?? 0
        longestMs = row?["longest_wait_ms"].double ?? 0
    }

    public init(count: Int, longestMs: Double) {
        self.count = count
        self.longestMs = longestMs
    }
}

/// A range as a batch transaction claimed it, under the range's row lock.
public struct RangeClaim: Sendable, Hashable {
    public var range: Int
    /// Where the next batch starts (exclusive): the range's checkpoint, else its lower bound;
    /// nil at the start of the table.
    public var lower: [String]?
    /// Where the range ends (inclusive); nil for the open-ended last range.
    public var ceiling: [String]?
    public var jobState: JobState
}

/// The checkpoint store: a schema of its own (default `backfill`) with a jobs table and a ranges
/// table. It creates and upgrades its tables idempotently, under an advisory lock so that runners
/// starting together do not race.
public struct CheckpointStore: Sendable {
    /// The schema's name, unquoted.
    public let schema: String
    private var jobs: String { "\(Identifier.quote(schema)).jobs" }
    private var ranges: String { "\(Identifier.quote(schema)).ranges" }
    private var workers: String { "\(Identifier.quote(schema)).workers" }

    public init(schema: String = "backfill") { self.schema = schema }

    /// The DDL of the current schema version; every statement is safe to run again.
    var migrations: String {
        """
        CREATE TABLE IF NOT EXISTS \(jobs) (
            name text PRIMARY KEY,
            spec_hash text NOT NULL,
            table_name text NOT NULL,
            state text NOT NULL DEFAULT 'pending',
            rows_done bigint NOT NULL DEFAULT 0,
            batches bigint NOT NULL DEFAULT 0,
            last_key jsonb,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS runner text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS paused_by text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS paused_at timestamptz;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS throttle_reason text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS throttled_since timestamptz;
        CREATE TABLE IF NOT EXISTS \(ranges) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            range_id integer NOT NULL,
            lower_key jsonb,
            upper_key jsonb,
            last_key jsonb,
            done boolean NOT NULL DEFAULT false,
            rows_done bigint NOT NULL DEFAULT 0,
            batches bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, range_id)
        );
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS estimated_rows bigint;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS worker text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS bucket_tokens float8;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS bucket_at timestamptz;
        CREATE TABLE IF NOT EXISTS \(workers) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            worker text NOT NULL,
            range_id integer,
            rows_done bigint NOT NULL DEFAULT 0,
            rows_per_second float8 NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, worker)
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS pass integer NOT NULL DEFAULT 1;
        CREATE TABLE IF NOT EXISTS \(Identifier.quote(schema)).store_version (version integer NOT NULL);
        DELETE FROM \(Identifier.quote(schema)).store_version;
        INSERT INTO \(Identifier.quote(schema)).store_version VALUES (\(Self.version));
        """
    }

    /// The store's schema version; `migrate` changes tables only when the stored one is older.
    static let version = 3

    /// The version recorded in the store, or nil when it has none (no store, or one made before
    /// versions were recorded).
    func storedVersion(_ db: Connection) throws -> Int? {
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text("\(Identifier.quote(schema)).store_version")]).first?["present"].bool == true
        else { return nil }
        return try db.query("SELECT max(version) AS v FROM \(Identifier.quote(schema)).store_version").first?["v"].int
    }

    /// Creates or upgrades the store's tables, only when its recorded version is older than this
    /// build's: a store that is up to date costs one catalog query and takes no lock. Upgrades
    /// run under an advisory lock and `lock_timeout`, create the schema only when it does not
    /// exist (a role that owns an existing schema needs no CREATE on the database), and refuse a
    /// schema that holds tables Backfill did not create.
    public func migrate(_ db: Connection) throws {
        if try storedVersion(db) == Self.version { return }
        try db.transaction { db in
            try db.execute("SET LOCAL lock_timeout = '5s'")
            try db.query("SELECT pg_advisory_xact_lock(hashtext($1))", [.text("backfill-store:" + schema)])
            if try storedVersion(db) == Self.version { return }
            let found = try db.query(
                """
                SELECT to_regnamespace($1) IS NOT NULL AS schema_exists,
                       to_regclass($2) IS NOT NULL AS has_jobs,
                       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))::int AS relations
                """, [.text(Identifier.quote(schema)), .text(jobs)]).first
            if found?["schema_exists"].bool == true, found?["has_jobs"].bool == false, (found?["relations"].int ?? 0) > 0 {
                throw JobFileError(
                    file: "--schema", field: nil,
                    problem: "schema `\(schema)` holds tables that Backfill did not create",
                    fix: "give Backfill a schema of its own with `--schema NAME` (it creates its tables there), or create an empty one: `CREATE SCHEMA \(Identifier.quote(schema)) AUTHORIZATION <role>`")
            }
            try checkCreatePrivilege(schemaExists: found?["schema_exists"].bool == true, hasTables: found?["has_jobs"].bool == true, db: db)
            if found?["schema_exists"].bool != true { try db.execute("CREATE SCHEMA \(Identifier.quote(schema))") }
            try db.execute(migrations)
        }
    }

    /// Creating or upgrading the store needs CREATE on the database (no schema yet), CREATE on
    /// the schema (no tables yet), or ownership of the tables (an upgrade); without it, exit 2
    /// naming the privilege and the GRANT, before anything changes.
    private func checkCreatePrivilege(schemaExists: Bool, hasTables: Bool, db: Connection) throws {
        let row = try db.query(
            """
            SELECT current_user AS role, current_database() AS db,
                   has_database_privilege(current_database(), 'CREATE') AS on_database,
                   CASE WHEN to_regnamespace($1) IS NULL THEN false ELSE has_schema_privilege(to_regnamespace($1), 'CREATE') END AS on_schema,
                   CASE WHEN to_regclass($2) IS NULL THEN false ELSE pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass($2)), 'USAGE') END AS owns_tables
            """, [.text(Identifier.quote(schema)), .text(jobs)]).first
        let role = row?["role"].string ?? "the role"
        let (ok, grant): (Bool, String) =
            !schemaExists ? (row?["on_database"].bool == true, "GRANT CREATE ON DATABASE \(Identifier.quote(row?["db"].string ?? "")) TO \(Identifier.quote(role)), or create the schema for it: CREATE SCHEMA \(Identifier.quote(schema)) AUTHORIZATION \(Identifier.quote(role))")
            : !hasTables ? (row?["on_schema"].bool == true, "GRANT CREATE ON SCHEMA \(Identifier.quote(schema)) TO \(Identifier.quote(role))")
            : (row?["owns_tables"].bool == true, "run this version of backfill once as the role that owns the store's tables, which upgrades them")
        guard !ok else { return }
        throw JobFileError(
            file: "--schema", field: nil,
            problem: "role \(role) cannot \(hasTables ? "upgrade" : "create") the checkpoint store in schema `\(schema)`",
            fix: grant)
    }

    /// What `prepare` found.
    public enum Preparation: Sendable, Hashable {
        /// The job may run.
        case ready
        /// The job finished before; nothing to do.
        case alreadyDone
        /// The job is paused or cancelled; it does not run.
        case notRunnable(JobState, by: String?)
        /// The job's checkpoint was made by a different spec.
        case specChanged
    }

    /// Registers the job (or finds it), checks its spec fingerprint, and makes sure it has a range.
    /// With `restart`, an existing checkpoint is discarded and the job starts from the first key.
    public func prepare(_ spec: JobSpec, plan: JobPlan, workers: Int, restart: Bool, db: Connection) throws -> Preparation {
        try db.transaction { db in
            try db.execute(SessionPins.statements)
            let existing = try db.query(
                "SELECT spec_hash, state, paused_by FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(spec.name)]
            ).first
            if let existing, !restart {
                if existing["spec_hash"].string != spec.fingerprint { return .specChanged }
                let state = JobState(rawValue: existing["state"].string ?? "") ?? .pending
                switch state {
                case .done where spec.repeats:
                    try startPass(spec.name, db: db)
                    return .ready
                case .done: return .alreadyDone
                case .paused, .cancelled: return .notRunnable(state, by: existing["paused_by"].string)
                default: break
                }
            }
            if existing != nil && restart {
                try db.query("DELETE FROM \(jobs) WHERE name = $1", [.text(spec.name)])
            }
            try db.query(
                "INSERT INTO \(jobs) (name, spec_hash, table_name) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                [.text(spec.name), .text(spec.fingerprint), .text(spec.table)])
            let hasRanges = try db.query("SELECT EXISTS (SELECT 1 FROM \(ranges) WHERE job = $1) AS present", [.text(spec.name)]).first?["present"].bool ?? false
            if !hasRanges { try createRanges(spec.name, plan: plan, workers: workers, db: db) }
            return .ready
        }
    }

    /// Splits the key space at quantiles of a sample of the key (read through TABLESAMPLE, so it
    /// works for any key type and for skewed keys) and stores the ranges.
    func createRanges(_ job: String, plan: JobPlan, workers: Int, db: Connection) throws {
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

    /// Starts a new pass over the whole key space: every range walks again from its lower bound,
    /// keeping its counters. Runs inside the caller's transaction.
    public func startPass(_ job: String, db: Connection) throws {
        try db.query(
            "UPDATE \(ranges) SET done = false, last_key = NULL, worker = NULL, estimated_rows = rows_done + coalesce(estimated_rows, 0), updated_at = now() WHERE job = $1",
            [.text(job)])
        try db.query("UPDATE \(jobs) SET pass = pass + 1, state = 'pending', finished_at = NULL, updated_at = now() WHERE name = $1", [.text(job)])
    }

    /// Deletes a job's record, ranges and workers (a rehearsal's own checkpoint, once it is done).
    public func remove(_ job: String, db: Connection) throws {
        try db.query("DELETE FROM \(jobs) WHERE name = $1", [.text(job)])
    }

    /// Marks the job running by this process.
    public func markRunning(_ job: String, runner: String, db: Connection) throws {
        try db.query(
            "UPDATE \(jobs) SET state = 'running', runner = $2, started_at = coalesce(started_at, now()), updated_at = now(), last_error = NULL WHERE name = $1",
            [.text(job), .text(runner)])
    }

    /// Records a final or resumable state, with the counters summed from the ranges.
    public func finish(_ job: String, state: JobState, error: String? = nil, db: Connection) throws {
        try db.query(
            """
            UPDATE \(jobs) j SET state = CASE WHEN j.state IN ('paused', 'cancelled') AND $2 = 'pending' THEN j.state ELSE $2 END,
                last_error = $3, updated_at = now(), throttle_reason = NULL, throttled_since = NULL,
                finished_at = CASE WHEN $2 = 'done' THEN now() END,
                rows_done = r.rows_done, batches = r.batches, last_key = r.last_key
            FROM (SELECT coalesce(sum(rows_done), 0)::bigint AS rows_done, coalesce(sum(batches), 0)::bigint AS batches,
                         (array_agg(last_key ORDER BY range_id DESC) FILTER (WHERE last_key IS NOT NULL))[1] AS last_key
                  FROM \(ranges) WHERE job = $1) r
            WHERE j.name = $1
            """, [.text(job), .text(state.rawValue), error.map { .text(ConnectionInfo.scrub($0)) } ?? .null])
    }

    /// Claims the range for one batch: locks its row (`FOR UPDATE SKIP LOCKED`) for the rest of the
    /// batch transaction and reads the checkpoint and the job's state. Nil when another
    /// transaction holds the range.
    public func claim(_ job: String, preferring preferred: Int?, db: Connection) throws -> RangeClaim? {
        guard let row = try db.query(
            """
            SELECT r.range_id, r.lower_key::text AS lower_key, r.upper_key::text AS upper_key, r.last_key::text AS last_key, j.state
            FROM \(ranges) r JOIN \(jobs) j ON j.name = r.job
            WHERE r.job = $1 AND NOT r.done
            ORDER BY r.range_id = $2 DESC, r.range_id
            LIMIT 1 FOR UPDATE OF r SKIP LOCKED
            """, [.text(job), .int(Int64(preferred ?? -1))], prepared: true).first
        else { return nil }
        return RangeClaim(
            range: row["range_id"].int ?? 0,
            lower: try (row["last_key"].string ?? row["lower_key"].string).map(Self.decodeKey),
            ceiling: try row["upper_key"].string.map(Self.decodeKey),
            jobState: JobState(rawValue: row["state"].string ?? "") ?? .running)
    }

    /// How many of the job's ranges are not walked to their end yet.
    public func openRanges(_ job: String, db: Connection) throws -> Int {
        try db.query("SELECT count(*) FILTER (WHERE NOT done)::int AS n FROM \(ranges) WHERE job = $1", [.text(job)]).first?["n"].int ?? 0
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
                       greatest(coalesce(estimated_rows, 0) - rows_done, 0)::bigint AS remaining
                FROM \(ranges) WHERE job = $1 AND NOT done
                ORDER BY greatest(coalesce(estimated_rows, 0) - rows_done, 0) DESC, range_id LIMIT 1
                """, [.text(job)]).first,
                let range = row["range_id"].int
            else { return false }
            // Lock it (after the batch in flight commits) and read the committed position again.
            guard let locked = try db.query(
                "SELECT coalesce(last_key, lower_key)::text AS lower, upper_key::text AS ceiling, done, greatest(coalesce(estimated_rows, 0) - rows_done, 0)::bigint AS remaining FROM \(ranges) WHERE job = $1 AND range_id = $2 FOR UPDATE",
                [.text(job), .int(Int64(range))]).first, locked["done"].bool == false
            else { return false }
            let remaining = locked["remaining"].int64 ?? 0
            guard remaining >= minimumRows else { return false }
            let lower = try locked["lower"].string.map(Self.decodeKey)
            let ceiling = try locked["ceiling"].string.map(Self.decodeKey)
            let values = (lower ?? []).map(PostgresValue.text) + (ceiling ?? []).map(PostgresValue.text) + [.int(remaining / 2)]
            guard let mid = try db.query(plan.statements.upperBound(afterKey: lower != nil, belowCeiling: ceiling != nil), values).first
                .map({ plan.statements.upperKey($0).key }), mid != ceiling
            else { return false }
            let next = try db.query("SELECT max(range_id) + 1 AS id FROM \(ranges) WHERE job = $1", [.text(job)]).first?["id"].int ?? 0
            try db.query(
                "UPDATE \(ranges) SET upper_key = $3::jsonb, estimated_rows = rows_done + $4 WHERE job = $1 AND range_id = $2",
                [.text(job), .int(Int64(range)), .text(Self.encodeKey(mid)), .int(remaining / 2)])
            try db.query(
                "INSERT INTO \(ranges) (job, range_id, lower_key, upper_key, estimated_rows) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)",
                [.text(job), .int(Int64(next)), .text(Self.encodeKey(mid)), ceiling.map { .text(Self.encodeKey($0)) } ?? .null, .int(remaining - remaining / 2)])
            return true
        }
    }

    /// Records a worker's progress for `status` (a few times a minute, outside batch transactions).
    public func heartbeat(_ job: String, worker: String, range: Int?, rowsDone: Int64, rowsPerSecond: Double, db: Connection) throws {
        try db.query(
            """
            INSERT INTO \(workers) (job, worker, range_id, rows_done, rows_per_second) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (job, worker) DO UPDATE SET range_id = excluded.range_id, rows_done = excluded.rows_done,
                rows_per_second = excluded.rows_per_second, last_seen = now()
            """, [.text(job), .text(worker), range.map { .int(Int64($0)) } ?? .null, .int(rowsDone), .double(rowsPerSecond)])
    }

    /// The job-wide token bucket for `throttle.max_rows_per_second`, shared by every worker of
    /// every process: takes `rows` and returns how long to wait before the next batch.
    public func consumeRate(_ job: String, rows: Int64, rowsPerSecond: Int, db: Connection) throws -> Double {
        let tokens = try db.query(
            """
            UPDATE \(jobs) SET
                bucket_tokens = least($3::float8, coalesce(bucket_tokens, 0) + coalesce(extract(epoch FROM clock_timestamp() - bucket_at), 0) * $3::float8) - $2,
                bucket_at = clock_timestamp()
            WHERE name = $1 RETURNING bucket_tokens
            """, [.text(job), .int(rows), .int(Int64(rowsPerSecond))]).first?["bucket_tokens"].double ?? 0
        return tokens >= 0 ? 0 : -tokens / Double(rowsPerSecond)
    }

    /// Moves the range's checkpoint; runs inside the batch transaction, after the batch statement.
    /// With `countWaiters`, the same statement also returns how many sessions are waiting on this
    /// transaction's locks right now, at the end of the batch, when it holds the most of them.
    @discardableResult
    public func advance(_ job: String, range: Int, lastKey: [String], rows: Int64, worker: String, countWaiters: Bool = false, db: Connection) throws -> Waiters {
        let (from, returning) = countWaiters
            ? (" FROM (\(Self.waitersQuery)) w", "w.waiters, w.longest_wait_ms")
            : ("", "0 AS waiters, 0::float8 AS longest_wait_ms")
        let row = try db.query(
            "UPDATE \(ranges) SET last_key = $3::jsonb, rows_done = rows_done + $4, batches = batches + 1, worker = $5, updated_at = now()\(from) WHERE job = $1 AND range_id = $2 RETURNING \(returning)",
            [.text(job), .int(Int64(range)), .text(Self.encodeKey(lastKey)), .int(rows), .text(worker)], prepared: true).first
        return Waiters(row)
    }

    /// Sessions waiting on this transaction's locks right now, and the longest any of them has
    /// waited so far (since its statement started); the columns `waiters` and `longest_wait_ms`.
    static let waitersQuery = """
        SELECT count(*)::int AS waiters, coalesce(max(extract(epoch FROM clock_timestamp() - a.query_start)) * 1000, 0)::float8 AS longest_wait_ms \
        FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock' AND pg_backend_pid() = ANY (pg_blocking_pids(a.pid))
        """

    /// Records why the job is throttled (nil when it no longer is), for `status`.
    public func setThrottle(_ job: String, reason: String?, db: Connection) throws {
        try db.query(
            "UPDATE \(jobs) SET throttle_reason = $2, throttled_since = CASE WHEN $2::text IS NULL THEN NULL ELSE now() END WHERE name = $1",
            [.text(job), reason.map { .text($0) } ?? .null])
    }

    /// The job's state, read outside a batch (while throttled).
    public func state(_ job: String, db: Connection) throws -> JobState? {
        try db.query("SELECT state FROM \(jobs) WHERE name = $1", [.text(job)]).first.flatMap { JobState(rawValue: $0["state"].string ?? "") }
    }

    /// Marks the range walked to its end.
    public func completeRange(_ job: String, range: Int, db: Connection) throws {
        try db.query("UPDATE \(ranges) SET done = true, updated_at = now() WHERE job = $1 AND range_id = $2", [.text(job), .int(Int64(range))])
    }

    /// What an operator command did.
    public enum CommandResult: Sendable, Hashable {
        /// The job moved to this state (nil: its record was removed).
        case applied(JobState?)
        /// `JobLifecycle` does not allow the command in the job's state: the reason.
        case refused(JobState, String)
        case notFound
    }

    /// Carries out `pause`, `resume`, `cancel` or `forget` as `JobLifecycle` decides, under the job
    /// row's lock. Never creates or upgrades the store.
    public func apply(_ command: JobCommand, job: String, by actor: String, db: Connection) throws -> CommandResult {
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(jobs)]).first?["present"].bool == true else { return .notFound }
        return try db.transaction { db in
            guard let row = try db.query("SELECT state FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(job)]).first,
                  let state = JobState(rawValue: row["state"].string ?? "")
            else { return .notFound }
            switch JobLifecycle.decide(command, from: state) {
            case .refuse(let reason):
                return .refused(state, reason)
            case .remove:
                try db.query("DELETE FROM \(jobs) WHERE name = $1", [.text(job)])
                return .applied(nil)
            case .to(let next):
                try db.query(
                    """
                    UPDATE \(jobs) SET state = $2, updated_at = now(),
                        paused_by = CASE WHEN $2 IN ('paused', 'cancelled') THEN $3 ELSE NULL END,
                        paused_at = CASE WHEN $2 IN ('paused', 'cancelled') THEN now() ELSE NULL END
                    WHERE name = $1
                    """, [.text(job), .text(next.rawValue), .text(actor)])
                return .applied(next)
            }
        }
    }

    /// The jobs in the store (or one of them), with progress summed over their ranges.
    public func status(job: String? = nil, db: Connection) throws -> [JobStatus] {
        let exists = try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text("\(Identifier.quote(schema)).jobs")]).first?["present"].bool ?? false
        guard exists else { return [] }
        return try db.query(
            """
            SELECT j.name, j.state, j.table_name, j.last_error, j.pass, j.runner, j.paused_by, j.paused_at, j.started_at, j.finished_at,
                   j.throttle_reason, j.throttled_since,
                   coalesce(r.rows_done, 0) AS rows_done, coalesce(r.batches, 0) AS batches, r.last_key::text AS last_key,
                   greatest(j.updated_at, r.updated_at) AS updated_at, coalesce(r.ranges, 0) AS ranges, coalesce(r.ranges_done, 0) AS ranges_done,
                   EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND l.classid = $2::int::oid AND l.objid = hashtext(j.name)::oid AND l.objsubid = 2)
                       OR EXISTS (SELECT 1 FROM \(workers) w WHERE w.job = j.name AND w.last_seen > now() - interval '30 seconds'
                                  AND (j.runner IS NULL OR left(w.worker, length(j.runner) + 1) <> j.runner || ':')) AS runner_alive,
                   (SELECT max(w.last_seen) FROM \(workers) w WHERE w.job = j.name) AS last_seen
            FROM \(jobs) j LEFT JOIN LATERAL (
                SELECT sum(rows_done)::bigint AS rows_done, sum(batches)::bigint AS batches, max(updated_at) AS updated_at,
                       count(*)::int AS ranges, count(*) FILTER (WHERE done)::int AS ranges_done,
                       (array_agg(last_key ORDER BY range_id DESC) FILTER (WHERE last_key IS NOT NULL))[1] AS last_key
                FROM \(ranges) WHERE job = j.name) r ON true
            WHERE $1::text IS NULL OR j.name = $1
            ORDER BY j.name
            """, [job.map { .text($0) } ?? .null, .int(Lease.namespace)]
        ).rows.map { row in
            let stored = JobState(rawValue: row["state"].string!) ?? .pending
            // `running` with no live lease and no fresh heartbeat: the runner died (kill -9, a lost
            // host). The job is resumable, so it shows as pending, with since when nobody runs it.
            let orphaned = stored == .running && row["runner_alive"].bool == false
            return JobStatus(
                name: row["name"].string!, state: orphaned ? .pending : stored,
                table: row["table_name"].string!, rowsDone: row["rows_done"].int64!, batches: row["batches"].int64!,
                lastKey: try row["last_key"].string.map(Self.decodeKey), lastError: row["last_error"].string,
                runner: row["runner"].string, pausedBy: row["paused_by"].string, pausedAt: row["paused_at"].date,
                startedAt: row["started_at"].date, updatedAt: row["updated_at"].date, finishedAt: row["finished_at"].date,
                rangesDone: row["ranges_done"].int ?? 0, ranges: row["ranges"].int ?? 0,
                throttleReason: row["throttle_reason"].string, throttledSince: row["throttled_since"].date,
                noRunnerSince: orphaned ? (row["last_seen"].date ?? row["updated_at"].date) : nil, pass: row["pass"].int ?? 1)
        }
    }

    /// The job's ranges and its recently seen workers.
    public func details(job: String, db: Connection) throws -> (ranges: [RangeStatus], workers: [WorkerStatus]) {
        let ranges = try db.query(
            "SELECT range_id, lower_key::text AS lo, upper_key::text AS hi, last_key::text AS last, done, rows_done, worker FROM \(self.ranges) WHERE job = $1 ORDER BY range_id",
            [.text(job)]
        ).rows.map { row in
            RangeStatus(
                range: row["range_id"].int ?? 0, lowerKey: try row["lo"].string.map(Self.decodeKey), upperKey: try row["hi"].string.map(Self.decodeKey),
                lastKey: try row["last"].string.map(Self.decodeKey), done: row["done"].bool ?? false, rowsDone: row["rows_done"].int64 ?? 0,
                worker: row["worker"].string)
        }
        let seen = try db.query(
            "SELECT worker, range_id, rows_done, rows_per_second, last_seen FROM \(workers) WHERE job = $1 AND last_seen > now() - interval '30 seconds' ORDER BY worker",
            [.text(job)]
        ).rows.map { row in
            WorkerStatus(worker: row["worker"].string ?? "", range: row["range_id"].int, rowsDone: row["rows_done"].int64 ?? 0,
                         rowsPerSecond: row["rows_per_second"].double ?? 0, lastSeen: row["last_seen"].date)
        }
        return (ranges, seen)
    }

    static func encodeKey(_ key: [String]) -> String {
        String(decoding: try! JSONEncoder().encode(key), as: UTF8.self)
    }

    static func decodeKey(_ json: String) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(json.utf8))
    }
}
