import PostgresClient

/// The raw health signals of one check, as `HealthReader` read them, for `HealthJudge`. A signal
/// that is nil was not read: it is not configured, or (the slow ones) not due.
struct HealthReading: Sendable, Hashable {
    /// A signal that answered, or why it could not be read and what would fix it.
    enum Outcome<Value: Sendable & Hashable>: Sendable, Hashable {
        case read(Value)
        case unreadable(message: String, fix: String)
    }

    /// `pg_stat_replication` and `pg_stat_progress_vacuum`, read in one query.
    struct Replicas: Sendable, Hashable {
        /// The largest replay lag of a replica (0 without replicas).
        var lagMs: Double = 0
        /// Replicas whose state this role may not see (`state IS NULL`).
        var hidden: Int = 0
        /// Whether a vacuum is working on the table.
        var vacuuming = false
    }

    /// The logical slot furthest behind `pg_current_wal_lsn()`.
    struct Slot: Sendable, Hashable {
        var name: String
        var behindBytes: Double
    }

    /// The signals read at most once per interval.
    struct Slow: Sendable, Hashable {
        var replicas: Replicas?
        /// The slot furthest behind; `.read(nil)`: no logical slot with a position.
        var slotLag: Outcome<Slot?>?
        /// WAL segments waiting for the archiver; `.read(nil)`: archiving is off.
        var archiveBacklog: Outcome<Int64?>?
        /// What `check_sql` returned; `.some(nil)`: NULL.
        var checkSQL: Bool??
    }

    /// Seconds the job's WAL budget says to wait, once the WAL written since the last check is
    /// charged to it.
    var walWait: Outcome<Double>?
    var slow: Slow?
}

/// Reads the health signals `HealthGate` watches, and judges nothing (`HealthJudge` does). A
/// server error other than a lost connection or a cancel on the WAL position, the slots or the
/// archive backlog is an `unreadable` outcome; any other error is thrown.
struct HealthReader {
    let throttle: JobSpec.Throttle
    let tableOID: Int64
    /// `statement_timeout` of every health check (`check_sql` included).
    let checkTimeoutMs: Int
    /// Charges the WAL written since the last check to the job's budget; returns seconds to wait.
    let chargeWal: (Connection) throws -> Double

    /// The WAL charge, and the slow signals when `slow`.
    func read(_ db: Connection, slow: Bool) throws -> HealthReading {
        HealthReading(walWait: try readWal(db), slow: slow ? try readSlow(db) : nil)
    }

    /// Charges the WAL budget (read at every check), when `throttle.max_wal_mb_per_second` is set.
    func readWal(_ db: Connection) throws -> HealthReading.Outcome<Double>? {
        guard throttle.maxWalMBPerSecond > 0 else { return nil }
        return try reading { try chargeWal(db) }
    }

    /// Replica lag and vacuums, slot lag, the archive backlog and `check_sql`, those configured.
    func readSlow(_ db: Connection) throws -> HealthReading.Slow {
        var slow = HealthReading.Slow()
        if throttle.maxReplicationLagMs > 0 || throttle.pauseDuringAutovacuum {
            let row = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) { try db.query(
                """
                SELECT (SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000), 0)::float8 FROM pg_stat_replication) AS lag_ms,
                       (SELECT count(*) FILTER (WHERE state IS NULL)::int FROM pg_stat_replication) AS hidden,
                       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = $1::oid) AS vacuuming
                """, [.int(tableOID)]).first }
            slow.replicas = .init(lagMs: row?["lag_ms"].double ?? 0, hidden: row?["hidden"].int ?? 0, vacuuming: row?["vacuuming"].bool == true)
        }
        if throttle.maxSlotLagMB > 0 {
            slow.slotLag = try reading { try slotLag(db) }
        }
        if throttle.maxArchiveBacklog > 0 {
            slow.archiveBacklog = try reading { try archiveBacklog(db) }
        }
        if let sql = throttle.checkSQL {
            // Read-only and time-boxed: the operator's check may read anything but change nothing.
            slow.checkSQL = .some(try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) {
                try db.query("SELECT (\(sql))::boolean AS ok").first?["ok"].bool
            })
        }
        return slow
    }

    /// Reads one signal; a server error other than a lost connection or a cancel means the
    /// signal cannot be read.
    private func reading<Value>(_ body: () throws -> Value) throws -> HealthReading.Outcome<Value> {
        do {
            return .read(try body())
        } catch let error as PostgresError where !Self.isTransient(error) {
            return .unreadable(message: error.message, fix: error.code.raw == "42501" ? HealthJudge.grant("pg_monitor") : "fix what the server says")
        } catch let problem as SignalProblem {
            return .unreadable(message: problem.message, fix: problem.fix)
        }
    }

    private static func isTransient(_ error: PostgresError) -> Bool {
        ["08", "57"].contains { error.code.raw.hasPrefix($0) } || error.severity == "CLIENT"
    }

    /// A signal that answered but cannot be trusted, with what would fix it.
    private struct SignalProblem: Error {
        var message: String
        var fix: String
    }

    /// The logical slot furthest behind `pg_current_wal_lsn()`, by what its consumer confirmed.
    private func slotLag(_ db: Connection) throws -> HealthReading.Slot? {
        let rows = try db.query(
            """
            SELECT slot_name::text AS slot,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::float8 AS behind
            FROM pg_replication_slots
            WHERE slot_type = 'logical' AND ($1::text IS NULL OR slot_name = ANY (string_to_array($1, ',')))
            ORDER BY behind DESC NULLS LAST
            """, [throttle.slots.map { .text($0.joined(separator: ",")) } ?? .null]).rows
        if let named = throttle.slots {
            let missing = named.filter { name in !rows.contains { $0["slot"].string == name } }
            if !missing.isEmpty {
                throw SignalProblem(message: "no logical slot named \(missing.joined(separator: ", ")) (throttle.slots)",
                                    fix: "name existing slots in throttle.slots (SELECT slot_name FROM pg_replication_slots)")
            }
        }
        guard let worst = rows.first, let behind = worst["behind"].double else { return nil }
        return .init(name: worst["slot"].string ?? "?", behindBytes: behind)
    }

    /// WAL segments waiting for the archiver: counted in the archive status directory where the
    /// role may list it, else estimated from `pg_stat_archiver`. Nil when archiving is off.
    private func archiveBacklog(_ db: Connection) throws -> Int64? {
        guard let row = try db.query(
            """
            SELECT current_setting('archive_mode') AS mode, current_user AS role,
                   has_function_privilege('pg_ls_archive_statusdir()', 'EXECUTE') AS can_list,
                   (SELECT last_archived_wal FROM pg_stat_archiver) AS last_archived,
                   pg_walfile_name(pg_current_wal_lsn()) AS current_wal,
                   pg_size_bytes(current_setting('wal_segment_size')) AS segment_bytes
            """).first, row["mode"].string != "off"
        else { return nil }
        if row["can_list"].bool == true {
            return try db.query("SELECT count(*)::bigint AS n FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").first?["n"].int64 ?? 0
        }
        if let last = row["last_archived"].string, let current = row["current_wal"].string,
           let estimate = ArchiveBacklog.estimate(lastArchived: last, current: current, segmentBytes: row["segment_bytes"].int64 ?? 0) {
            return estimate
        }
        throw SignalProblem(
            message: "pg_stat_archiver has archived nothing yet and role \(row["role"].string ?? "?") may not list the archive status directory (pg_ls_archive_statusdir())",
            fix: HealthJudge.grant("pg_monitor"))
    }
}
