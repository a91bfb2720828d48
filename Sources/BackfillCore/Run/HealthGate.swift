import PostgresClient

/// The throttles checked between batches, never while a batch holds locks: replica lag, logical
/// replication slots, WAL archiving, the job's WAL budget, autovacuum on the table, and the
/// operator's `check_sql`. The slow signals are read at most once per `interval` while healthy,
/// so that a server with no replicas pays one cheap query a second; the WAL budget is charged at
/// every check.
///
/// A configured signal that cannot be read (a missing privilege, a view that errors, a slot that
/// does not exist) makes the job wait with the reason and the fix (`signal_unreadable`), unless
/// `throttle.fail_open` is set.
struct HealthGate {
    /// Why the job should wait now: one of `ThrottleReason`'s health reasons.
    typealias Reason = ThrottleReason

    /// One reason to wait, with a detail for people.
    typealias Finding = (reason: Reason, detail: String)

    let throttle: JobSpec.Throttle
    let tableOID: Int64
    let interval: Double
    /// `statement_timeout` of every health check (`check_sql` included).
    let checkTimeoutMs: Int
    /// Charges the WAL written since the last check to the job's budget; returns seconds to wait.
    let chargeWal: (Connection) throws -> Double
    private var lastCheck = -Double.infinity
    /// What the slow signals said at their last reading.
    private var slowFindings: [Finding] = []
    /// How long to wait before checking again while a reason holds.
    private(set) var retryAfter: Double

    init(throttle: JobSpec.Throttle, tableOID: Int64, interval: Double = 1, checkTimeoutMs: Int = 5000,
         chargeWal: @escaping (Connection) throws -> Double = { _ in 0 }) {
        self.throttle = throttle
        self.tableOID = tableOID
        self.interval = interval
        self.checkTimeoutMs = checkTimeoutMs
        self.chargeWal = chargeWal
        self.retryAfter = interval
    }

    /// Whether the slow signals are due at `now` (seconds since the run started).
    func isDue(at now: Double) -> Bool { now - lastCheck >= interval }

    /// Reads the signals and returns the first reason to wait; its detail lists every reason
    /// that holds.
    mutating func check(at now: Double, db: Connection) throws -> (Reason, String)? {
        var findings: [Finding] = []
        var walWait = 0.0
        if throttle.maxWalMBPerSecond > 0 {
            try reading("the WAL position (pg_current_wal_lsn())", into: &findings) {
                walWait = try chargeWal(db)
                guard walWait > 0 else { return nil }
                return (.walRate, "WAL over the budget of \(throttle.maxWalMBPerSecond) MB/s; next batch in \(Int((walWait * 1000).rounded())) ms")
            }
        }
        if isDue(at: now) {
            lastCheck = now
            slowFindings = try readSlowSignals(db)
        }
        findings += slowFindings
        let onlyWal = findings.allSatisfy { $0.reason == .walRate }
        retryAfter = onlyWal ? min(max(walWait, 0.02), interval) : interval
        guard let first = findings.first else { return nil }
        return (first.reason, findings.map(\.detail).joined(separator: "; "))
    }

    private func readSlowSignals(_ db: Connection) throws -> [Finding] {
        var findings: [Finding] = []
        if throttle.maxReplicationLagMs > 0 || throttle.pauseDuringAutovacuum {
            let row = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) { try db.query(
                """
                SELECT (SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000), 0)::float8 FROM pg_stat_replication) AS lag_ms,
                       (SELECT count(*) FILTER (WHERE state IS NULL)::int FROM pg_stat_replication) AS hidden,
                       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = $1::oid) AS vacuuming
                """, [.int(tableOID)]).first }
            let lag = row?["lag_ms"].double ?? 0
            if throttle.maxReplicationLagMs > 0, (row?["hidden"].int ?? 0) > 0, !throttle.failOpen {
                findings.append(unreadable("replica lag (pg_stat_replication hides it from this role)", fix: Self.grant("pg_read_all_stats")))
            } else if throttle.maxReplicationLagMs > 0, lag > Double(throttle.maxReplicationLagMs) {
                findings.append((.replicationLag, "replica replay lag \(Int(lag)) ms > \(throttle.maxReplicationLagMs) ms"))
            }
            if throttle.pauseDuringAutovacuum, row?["vacuuming"].bool == true {
                findings.append((.autovacuum, "a vacuum is working on the table"))
            }
        }
        if throttle.maxSlotLagMB > 0 {
            try reading("replication slot lag (pg_replication_slots)", into: &findings) { try slotLag(db) }
        }
        if throttle.maxArchiveBacklog > 0 {
            try reading("the archive backlog", into: &findings) { try archiveBacklog(db) }
        }
        if let sql = throttle.checkSQL {
            // Read-only and time-boxed: the operator's check may read anything but change nothing.
            let ok = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(checkTimeoutMs)ms'"], on: db) {
                try db.query("SELECT (\(sql))::boolean AS ok").first?["ok"].bool
            }
            if ok != true { findings.append((.checkSQL, "check_sql returned \(ok.map(String.init) ?? "NULL")")) }
        }
        return findings
    }

    /// Reads one signal; a server error other than a lost connection or a cancel means the signal
    /// cannot be read, which throttles unless `fail_open`.
    private func reading(_ signal: String, into findings: inout [Finding], _ body: () throws -> Finding?) throws {
        do {
            if let finding = try body() { findings.append(finding) }
        } catch let error as PostgresError where !Self.isTransient(error) {
            if !throttle.failOpen {
                findings.append(unreadable(signal, fix: error.code.raw == "42501" ? Self.grant("pg_monitor") : "fix what the server says", error: error.message))
            }
        } catch let problem as SignalProblem {
            if !throttle.failOpen { findings.append(unreadable(signal, fix: problem.fix, error: problem.message)) }
        }
    }

    private static func isTransient(_ error: PostgresError) -> Bool {
        ["08", "57"].contains { error.code.raw.hasPrefix($0) } || error.severity == "CLIENT"
    }

    private static func grant(_ role: String) -> String { "GRANT \(role) TO the job's role" }

    private func unreadable(_ signal: String, fix: String, error: String? = nil) -> Finding {
        return (.unreadable, "cannot read \(signal)\(error.map { ": \($0)" } ?? ""); \(fix), or set throttle.fail_open: true to run without it")
    }

    /// A signal that answered but cannot be trusted, with what would fix it.
    private struct SignalProblem: Error {
        var message: String
        var fix: String
    }

    /// The logical slot furthest behind `pg_current_wal_lsn()`, by what its consumer confirmed.
    private func slotLag(_ db: Connection) throws -> Finding? {
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
        guard let worst = rows.first, let behind = worst["behind"].double, behind > Double(throttle.maxSlotLagMB) * 1_048_576 else { return nil }
        return (.slotLag, "replication slot \(worst["slot"].string ?? "?") is \(Int(behind / 1_048_576)) MB behind > \(throttle.maxSlotLagMB) MB")
    }

    /// WAL segments waiting for the archiver: counted in the archive status directory where the
    /// role may list it, else estimated from `pg_stat_archiver`.
    private func archiveBacklog(_ db: Connection) throws -> Finding? {
        guard let row = try db.query(
            """
            SELECT current_setting('archive_mode') AS mode, current_user AS role,
                   has_function_privilege('pg_ls_archive_statusdir()', 'EXECUTE') AS can_list,
                   (SELECT last_archived_wal FROM pg_stat_archiver) AS last_archived,
                   pg_walfile_name(pg_current_wal_lsn()) AS current_wal,
                   pg_size_bytes(current_setting('wal_segment_size')) AS segment_bytes
            """).first, row["mode"].string != "off"
        else { return nil }
        let backlog: Int64
        if row["can_list"].bool == true {
            backlog = try db.query("SELECT count(*)::bigint AS n FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").first?["n"].int64 ?? 0
        } else if let last = row["last_archived"].string, let current = row["current_wal"].string,
                  let estimate = ArchiveBacklog.estimate(lastArchived: last, current: current, segmentBytes: row["segment_bytes"].int64 ?? 0) {
            backlog = estimate
        } else {
            throw SignalProblem(
                message: "pg_stat_archiver has archived nothing yet and role \(row["role"].string ?? "?") may not list the archive status directory (pg_ls_archive_statusdir())",
                fix: Self.grant("pg_monitor"))
        }
        guard backlog > Int64(throttle.maxArchiveBacklog) else { return nil }
        return (.archiveBacklog, "\(backlog) WAL segments wait for the archiver > \(throttle.maxArchiveBacklog)")
    }
}
