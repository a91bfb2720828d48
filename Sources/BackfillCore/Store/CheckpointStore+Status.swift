import Foundation
import PostgresClient

/// What `status` reads: jobs with their progress summed over their ranges, ranges and workers.
extension CheckpointStore {
    /// Whether the schema holds a store yet (its `jobs` table): not before the first `run` in it.
    public func storeExists(db: Connection) throws -> Bool {
        try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(jobs)]).first?["present"].bool ?? false
    }

    /// The jobs in the store (or one of them), with progress summed over their ranges.
    public func status(job: String? = nil, db: Connection) throws -> [JobStatus] {
        guard try storeExists(db: db) else { return [] }
        // A lease is alive while its row has not expired and, when its holder was direct, its
        // session still holds the advisory lock (a killed runner's lock goes with its session).
        // An older store has no lease rows until the next `run` upgrades it.
        let hasLeases = try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(leases)]).first?["present"].bool ?? false
        let leaseAlive = hasLeases
            ? """
              EXISTS (SELECT 1 FROM \(leases) l WHERE l.job = j.name AND l.expires_at > now()
                      AND (NOT l.direct OR EXISTS (SELECT 1 FROM pg_locks k WHERE \(Lease.isAdvisoryLock("k", key: "l.lock_key")))))
              """
            : "false"
        let hasBadRows = try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(badRowsTable)]).first?["present"].bool ?? false
        let badRowCount = hasBadRows ? "(SELECT count(*) FROM \(badRowsTable) b WHERE b.job = j.name)" : "0"
        let tuning = try (storedVersion(db) ?? 0) >= 9 ? Self.tuningColumns("j") : Self.noTuningColumns
        let walk = try (storedVersion(db) ?? 0) >= 11 ? "j.walk" : "'key'::text AS walk"
        let revert = try (storedVersion(db) ?? 0) >= 10
            ? "CASE WHEN j.revert_last IS NOT NULL OR j.state IN ('reverting', 'reverted') THEN j.revert_restored END AS revert_restored, j.revert_conflicts"
            : "NULL::bigint AS revert_restored, 0::bigint AS revert_conflicts"
        return try db.query(
            """
            SELECT j.name, j.state, \(walk), \(tuning), r.keys_walked AS pass_keys, j.table_name, j.last_error, j.pass, j.runner, j.paused_by, j.paused_at, j.started_at, j.finished_at,
                   j.throttle_reason, j.throttle_detail, j.throttled_since,
                   extract(epoch FROM CASE WHEN j.state = 'running' THEN now() ELSE greatest(j.updated_at, r.updated_at) END - j.run_started_at)::float8 AS run_seconds,
                   (j.run_throttled_seconds + coalesce(extract(epoch FROM now() - j.throttled_since)::float8, 0)) AS run_throttled,
                   r.keys_walked - j.run_keys_before AS run_keys, r.keys_left,
                   coalesce(r.rows_done, 0) AS rows_done, coalesce(r.batches, 0) AS batches, r.last_key::text AS last_key,
                   greatest(j.updated_at, r.updated_at) AS updated_at, coalesce(r.ranges, 0) AS ranges, coalesce(r.ranges_done, 0) AS ranges_done,
                   \(leaseAlive)
                       OR EXISTS (SELECT 1 FROM \(workers) w WHERE w.job = j.name AND w.last_seen > now() - interval '30 seconds'
                                  AND (j.runner IS NULL OR left(w.worker, length(j.runner) + 1) <> j.runner || ':')) AS runner_alive,
                   (SELECT max(w.last_seen) FROM \(workers) w WHERE w.job = j.name) AS last_seen,
                   \(badRowCount)::bigint AS bad_rows, \(revert)
            FROM \(jobs) j LEFT JOIN LATERAL (
                SELECT sum(rows_done)::bigint AS rows_done, sum(batches)::bigint AS batches, max(updated_at) AS updated_at,
                       count(*)::int AS ranges, count(*) FILTER (WHERE done)::int AS ranges_done,
                       sum(keys_walked)::bigint AS keys_walked,
                       coalesce(sum(greatest(coalesce(estimated_rows, 0) - keys_walked, 0)) FILTER (WHERE NOT done), 0)::bigint AS keys_left,
                       (array_agg(last_key ORDER BY range_id DESC) FILTER (WHERE last_key IS NOT NULL))[1] AS last_key
                FROM \(ranges) WHERE job = j.name) r ON true
            WHERE $1::text IS NULL OR j.name = $1
            ORDER BY j.name
            """, [job.map { .text($0) } ?? .null]
        ).rows.map { row in
            let stored = JobState(rawValue: row["state"].string!) ?? .pending
            // `running` with no live lease and no fresh heartbeat: the runner died (kill -9, a lost
            // host). The job is resumable, so it shows as pending, with since when nobody runs it.
            let orphaned = stored == .running && row["runner_alive"].bool == false
            let estimate = stored == .done ? nil : RunEstimate(
                runSeconds: row["run_seconds"].double ?? 0, throttledSeconds: row["run_throttled"].double ?? 0,
                runKeys: row["run_keys"].int64 ?? 0, keysLeft: row["keys_left"].int64 ?? 0)
            var status = JobStatus(
                name: row["name"].string!, state: orphaned ? .pending : stored,
                table: row["table_name"].string!, rowsDone: row["rows_done"].int64!, batches: row["batches"].int64!,
                lastKey: try row["last_key"].string.map(Self.decodeKey), lastError: row["last_error"].string,
                runner: row["runner"].string, pausedBy: row["paused_by"].string, pausedAt: row["paused_at"].date,
                startedAt: row["started_at"].date, updatedAt: row["updated_at"].date, finishedAt: row["finished_at"].date,
                rangesDone: row["ranges_done"].int ?? 0, ranges: row["ranges"].int ?? 0,
                throttleReason: row["throttle_reason"].string, throttleDetail: row["throttle_detail"].string, throttledSince: row["throttled_since"].date,
                noRunnerSince: orphaned ? (row["last_seen"].date ?? row["updated_at"].date) : nil, pass: row["pass"].int ?? 1)
            status.etaSeconds = estimate?.etaSeconds
            status.runThrottledSeconds = estimate.map { $0.throttledSeconds }
            status.badRows = row["bad_rows"].int64 ?? 0
            status.walk = row["walk"].string ?? "key"
            status.tuning = Self.tuning(in: row)
            status.revertRestored = row["revert_restored"].int64
            status.revertConflicts = row["revert_conflicts"].int64 ?? 0
            if stored == .done || stored == .finalizing {
                status.percentDone = 100
            } else if let walked = row["pass_keys"].int64, let left = row["keys_left"].int64, walked + left > 0 {
                status.percentDone = min(100, 100 * Double(walked) / Double(walked + left))
            }
            return status
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
}
