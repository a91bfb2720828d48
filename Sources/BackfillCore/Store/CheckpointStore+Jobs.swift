import Foundation
import PostgresClient

/// The job record: registration and the spec fingerprint, passes, the running and final states,
/// the throttle reason, and the operator commands of `JobLifecycle`.
extension CheckpointStore {
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
                "SELECT spec_hash, state, paused_by, revert_last IS NOT NULL AS reverting FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(spec.name)]
            ).first
            if let existing, !restart, existing["reverting"].bool == true || ["reverting", "reverted"].contains(existing["state"].string ?? "") {
                throw JobFileError(
                    file: spec.file, field: nil,
                    problem: "job `\(spec.name)` is \(existing["state"].string == "reverted" ? "reverted" : "being reverted"): a run would write again what `backfill revert` puts back",
                    fix: "finish the revert with `backfill revert \(spec.file)`, or start the job over with `run --restart` (which discards its journal)")
            }
            if let existing, !restart {
                if existing["spec_hash"].string != spec.fingerprint { return .specChanged }
                let state = JobState(rawValue: existing["state"].string ?? "") ?? .pending
                switch state {
                case .done where spec.repeats:
                    try startPass(spec.name, plan: plan, db: db)
                    return .ready
                case .done: return .alreadyDone
                case .paused, .cancelled: return .notRunnable(state, by: existing["paused_by"].string)
                default: break
                }
            }
            if existing != nil && restart {
                try db.query("DELETE FROM \(jobs) WHERE name = $1", [.text(spec.name)])
                try dropJournal(spec.name, db: db)
            }
            try db.query(
                "INSERT INTO \(jobs) (name, spec_hash, table_name, walk) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                [.text(spec.name), .text(spec.fingerprint), .text(spec.table), .text(spec.walk.rawValue)])
            let hasRanges = try db.query("SELECT EXISTS (SELECT 1 FROM \(ranges) WHERE job = $1) AS present", [.text(spec.name)]).first?["present"].bool ?? false
            if !hasRanges { try createRanges(spec.name, plan: plan, workers: workers, db: db) }
            return .ready
        }
    }

    /// Starts a new pass over the whole key space: every range walks again from its lower bound,
    /// keeping its row and batch counters; the keys it walked last pass become its estimate.
    /// Runs inside the caller's transaction.
    /// A physical walk's pass ends at the table's size as it starts (`extendPageWalk`). Given the
    /// pages that still hold matching rows (`stragglers`, by heap), a physical walk's catch-up
    /// pass walks only those (`RangeSplitter.pageRuns`), in ranges of their own, marked
    /// `catch_up` and kept done afterwards with their counters; a full pass leaves them out.
    public func startPass(_ job: String, plan: JobPlan, stragglers: [String: [Int64]]? = nil, db: Connection) throws {
        if plan.spec.walk == .physical, let stragglers {
            var next = try db.query("SELECT coalesce(max(range_id) + 1, 0)::bigint AS id FROM \(ranges) WHERE job = $1", [.text(job)]).first?["id"].int64 ?? 0
            for heap in plan.heaps {
                for run in RangeSplitter.pageRuns(stragglers[heap] ?? []) {
                    try db.query(
                        "INSERT INTO \(ranges) (job, range_id, lower_key, upper_key, estimated_rows, relation, catch_up) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, true)",
                        [.text(job), .int(next), .text(Self.encodeKey(BatchStatements.page(run.first))), .text(Self.encodeKey(BatchStatements.page(run.end))), .int(run.end - run.first), .text(heap)])
                    next += 1
                }
            }
        } else {
            try db.query(
                "UPDATE \(ranges) SET done = false, last_key = NULL, worker = NULL, estimated_rows = keys_walked, keys_walked = 0, updated_at = now() WHERE job = $1 AND NOT catch_up",
                [.text(job)])
            if plan.spec.walk == .physical { try extendPageWalk(job, heaps: plan.heaps, db: db) }
        }
        try db.query("UPDATE \(jobs) SET pass = pass + 1, state = 'pending', finished_at = NULL, updated_at = now() WHERE name = $1", [.text(job)])
    }

    /// Deletes a job's record, ranges and workers (a rehearsal's own checkpoint, once it is done).
    public func remove(_ job: String, db: Connection) throws {
        try db.query("DELETE FROM \(jobs) WHERE name = $1", [.text(job)])
        try dropJournal(job, db: db)
    }

    /// Marks the job running by this process, and starts the run's clock for the ETA in `status`
    /// (when it started, the keys walked before it, its throttled seconds).
    public func markRunning(_ job: String, runner: String, db: Connection) throws {
        try db.query(
            """
            UPDATE \(jobs) SET state = 'running', runner = $2, started_at = coalesce(started_at, now()), updated_at = now(), last_error = NULL,
                run_started_at = now(), run_throttled_seconds = 0,
                run_keys_before = (SELECT coalesce(sum(keys_walked), 0)::bigint FROM \(ranges) WHERE job = $1)
            WHERE name = $1
            """, [.text(job), .text(runner)])
    }

    /// Records a final or resumable state, with the counters summed from the ranges.
    public func finish(_ job: String, state: JobState, error: String? = nil, db: Connection) throws {
        try db.query(
            """
            UPDATE \(jobs) j SET state = CASE WHEN j.state IN ('paused', 'cancelled') AND $2 = 'pending' THEN j.state ELSE $2 END,
                last_error = $3, updated_at = now(), throttle_reason = NULL, throttle_detail = NULL, throttled_since = NULL,
                finished_at = CASE WHEN $2 = 'done' THEN now() END,
                rows_done = r.rows_done, batches = r.batches, last_key = r.last_key
            FROM (SELECT coalesce(sum(rows_done), 0)::bigint AS rows_done, coalesce(sum(batches), 0)::bigint AS batches,
                         (array_agg(last_key ORDER BY range_id DESC) FILTER (WHERE last_key IS NOT NULL))[1] AS last_key
                  FROM \(ranges) WHERE job = $1) r
            WHERE j.name = $1
            """, [.text(job), .text(state.rawValue), error.map { .text(ConnectionInfo.scrub($0)) } ?? .null])
    }

    /// Records why the job is throttled (nil when it no longer is) and the detail for people
    /// (every reason that holds, and the fix for a signal that cannot be read), for `status`.
    public func setThrottle(_ job: String, reason: String?, detail: String?, db: Connection) throws {
        try db.query(
            """
            UPDATE \(jobs) SET throttle_reason = $2, throttle_detail = CASE WHEN $2::text IS NULL THEN NULL ELSE $3 END,
                throttled_since = CASE WHEN $2::text IS NULL THEN NULL WHEN throttle_reason IS NOT DISTINCT FROM $2 THEN coalesce(throttled_since, now()) ELSE now() END,
                run_throttled_seconds = run_throttled_seconds + CASE WHEN $2::text IS NULL OR throttle_reason IS DISTINCT FROM $2
                    THEN coalesce(extract(epoch FROM now() - throttled_since)::float8, 0) ELSE 0 END
            WHERE name = $1
            """, [.text(job), reason.map { .text($0) } ?? .null, detail.map { .text($0) } ?? .null])
    }

    /// The job's state, read outside a batch (while throttled).
    public func state(_ job: String, db: Connection) throws -> JobState? {
        try db.query("SELECT state FROM \(jobs) WHERE name = $1", [.text(job)]).first.flatMap { JobState(rawValue: $0["state"].string ?? "") }
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
                try dropJournal(job, db: db)
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
}
