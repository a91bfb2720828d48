import Foundation
import PostgresClient

/// A job's state in the checkpoint store.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case pending, running, paused, done, failed, cancelled
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

    enum CodingKeys: String, CodingKey {
        case name, state, table, batches, runner, ranges
        case rowsDone = "rows_done", lastKey = "last_key", lastError = "last_error", pausedBy = "paused_by"
        case pausedAt = "paused_at", startedAt = "started_at", updatedAt = "updated_at", finishedAt = "finished_at"
        case rangesDone = "ranges_done", throttleReason = "throttle_reason", throttledSince = "throttled_since"
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
}

/// The job's checkpoint as a batch transaction reads it, under the range's row lock.
public struct RangeClaim: Sendable, Hashable {
    public var lastKey: [String]?
    public var done: Bool
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

    public init(schema: String = "backfill") { self.schema = schema }

    /// The DDL of the current schema version; every statement is safe to run again.
    var migrations: String {
        """
        CREATE SCHEMA IF NOT EXISTS \(Identifier.quote(schema));
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
        """
    }

    /// Creates or upgrades the store's tables.
    public func migrate(_ db: Connection) throws {
        try db.transaction { db in
            try db.query("SELECT pg_advisory_xact_lock(hashtext($1))", [.text("backfill-store:" + schema)])
            try db.execute(migrations)
        }
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
    public func prepare(_ spec: JobSpec, restart: Bool, db: Connection) throws -> Preparation {
        try db.transaction { db in
            let existing = try db.query(
                "SELECT spec_hash, state, paused_by FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(spec.name)]
            ).first
            if let existing, !restart {
                if existing["spec_hash"].string != spec.fingerprint { return .specChanged }
                let state = JobState(rawValue: existing["state"].string ?? "") ?? .pending
                switch state {
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
            try db.query(
                "INSERT INTO \(ranges) (job, range_id) VALUES ($1, 0) ON CONFLICT DO NOTHING", [.text(spec.name)])
            return .ready
        }
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
            """, [.text(job), .text(state.rawValue), error.map { .text($0) } ?? .null])
    }

    /// Claims the range for one batch: locks its row (`FOR UPDATE SKIP LOCKED`) for the rest of the
    /// batch transaction and reads the checkpoint and the job's state. Nil when another
    /// transaction holds the range.
    public func claim(_ job: String, range: Int, db: Connection) throws -> RangeClaim? {
        guard let row = try db.query(
            """
            SELECT r.last_key::text AS last_key, r.done, j.state FROM \(ranges) r JOIN \(jobs) j ON j.name = r.job
            WHERE r.job = $1 AND r.range_id = $2 FOR UPDATE OF r SKIP LOCKED
            """, [.text(job), .int(Int64(range))]).first
        else { return nil }
        return RangeClaim(
            lastKey: try row["last_key"].string.map(Self.decodeKey), done: row["done"].bool ?? false,
            jobState: JobState(rawValue: row["state"].string ?? "") ?? .running)
    }

    /// Moves the range's checkpoint; runs inside the batch transaction, after the batch statement.
    /// With `countWaiters`, the same statement also returns how many sessions are waiting on this
    /// transaction's locks right now, at the end of the batch, when it holds the most of them.
    @discardableResult
    public func advance(_ job: String, range: Int, lastKey: [String], rows: Int64, countWaiters: Bool = false, db: Connection) throws -> Waiters {
        let waiters = countWaiters ? Self.waitersExpression : "0 AS waiters, 0::float8 AS longest_wait_ms"
        let row = try db.query(
            "UPDATE \(ranges) SET last_key = $3::jsonb, rows_done = rows_done + $4, batches = batches + 1, updated_at = now() WHERE job = $1 AND range_id = $2 RETURNING \(waiters)",
            [.text(job), .int(Int64(range)), .text(Self.encodeKey(lastKey)), .int(rows)]).first
        return Waiters(row)
    }

    /// Sessions waiting on this transaction's locks right now, and the longest any of them has
    /// waited so far (since its statement started); the columns `waiters` and `longest_wait_ms`.
    static let waitersExpression = """
        (SELECT count(*) FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock' AND pg_backend_pid() = ANY (pg_blocking_pids(a.pid)))::int AS waiters, \
        (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - a.query_start)) * 1000, 0) FROM pg_stat_activity a \
         WHERE a.wait_event_type = 'Lock' AND pg_backend_pid() = ANY (pg_blocking_pids(a.pid)))::float8 AS longest_wait_ms
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

    /// Sets a job's state from outside its runner (`pause`, `resume`, `cancel`). Returns false when
    /// no such job exists.
    public func setState(_ job: String, to state: JobState, by actor: String, db: Connection) throws -> Bool {
        try migrate(db)
        let result = try db.query(
            """
            UPDATE \(jobs) SET state = $2, updated_at = now(),
                paused_by = CASE WHEN $2 IN ('paused', 'cancelled') THEN $3 ELSE NULL END,
                paused_at = CASE WHEN $2 IN ('paused', 'cancelled') THEN now() ELSE NULL END
            WHERE name = $1
            """, [.text(job), .text(state.rawValue), .text(actor)])
        return result.affectedRows == 1
    }

    /// The jobs in the store (or one of them), with progress summed over their ranges.
    public func status(job: String? = nil, db: Connection) throws -> [JobStatus] {
        let exists = try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text("\(Identifier.quote(schema)).jobs")]).first?["present"].bool ?? false
        guard exists else { return [] }
        return try db.query(
            """
            SELECT j.name, j.state, j.table_name, j.last_error, j.runner, j.paused_by, j.paused_at, j.started_at, j.finished_at,
                   j.throttle_reason, j.throttled_since,
                   coalesce(r.rows_done, 0) AS rows_done, coalesce(r.batches, 0) AS batches, r.last_key::text AS last_key,
                   greatest(j.updated_at, r.updated_at) AS updated_at, coalesce(r.ranges, 0) AS ranges, coalesce(r.ranges_done, 0) AS ranges_done
            FROM \(jobs) j LEFT JOIN LATERAL (
                SELECT sum(rows_done)::bigint AS rows_done, sum(batches)::bigint AS batches, max(updated_at) AS updated_at,
                       count(*)::int AS ranges, count(*) FILTER (WHERE done)::int AS ranges_done,
                       (array_agg(last_key ORDER BY range_id DESC) FILTER (WHERE last_key IS NOT NULL))[1] AS last_key
                FROM \(ranges) WHERE job = j.name) r ON true
            WHERE $1::text IS NULL OR j.name = $1
            ORDER BY j.name
            """, [job.map { .text($0) } ?? .null]
        ).rows.map { row in
            JobStatus(
                name: row["name"].string!, state: JobState(rawValue: row["state"].string!) ?? .pending,
                table: row["table_name"].string!, rowsDone: row["rows_done"].int64!, batches: row["batches"].int64!,
                lastKey: try row["last_key"].string.map(Self.decodeKey), lastError: row["last_error"].string,
                runner: row["runner"].string, pausedBy: row["paused_by"].string, pausedAt: row["paused_at"].date,
                startedAt: row["started_at"].date, updatedAt: row["updated_at"].date, finishedAt: row["finished_at"].date,
                rangesDone: row["ranges_done"].int ?? 0, ranges: row["ranges"].int ?? 0,
                throttleReason: row["throttle_reason"].string, throttledSince: row["throttled_since"].date)
        }
    }

    static func encodeKey(_ key: [String]) -> String {
        String(decoding: try! JSONEncoder().encode(key), as: UTF8.self)
    }

    static func decodeKey(_ json: String) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(json.utf8))
    }
}
