/// Judges the health signals `HealthReader` read: which reasons to wait hold, and how long to
/// wait before checking again. Pure: no connection and no clock (the time comes in).
///
/// The slow signals are judged when a reading carries them and their findings are reused until
/// they are due again, `interval` after they were last read. A configured signal that cannot be
/// read makes the job wait with the reason and the fix (`signal_unreadable`), unless
/// `throttle.fail_open` is set.
struct HealthJudge: Sendable {
    typealias Reason = HealthGate.Reason
    /// One reason to wait, with a detail for people.
    typealias Finding = (reason: Reason, detail: String)

    let throttle: JobSpec.Throttle
    /// Seconds between readings of the slow signals.
    let interval: Double
    /// When the slow signals were last read (or their reading was tried).
    private(set) var lastSlowRead = -Double.infinity
    /// What the slow signals said at their last reading.
    private(set) var slowFindings: [Finding] = []
    /// How long to wait before checking again while a reason holds.
    private(set) var retryAfter: Double

    init(throttle: JobSpec.Throttle, interval: Double = 1) {
        self.throttle = throttle
        self.interval = interval
        retryAfter = interval
    }

    /// Whether the slow signals are due at `now` (seconds since the run started).
    func isDue(at now: Double) -> Bool { now - lastSlowRead >= interval }

    /// Records that the slow signals were read, or that reading them was tried, at `now`: they
    /// are due again `interval` later, whether or not the reading got through.
    mutating func slowSignalsRead(at now: Double) { lastSlowRead = now }

    /// The first reason to wait, with a detail that lists every reason that holds; nil: healthy.
    /// Sets `retryAfter`: a WAL budget that is the only reason waits as long as the budget says
    /// (at least 20 ms, at most `interval`), anything else `interval`.
    mutating func judge(_ reading: HealthReading, at now: Double) -> (Reason, String)? {
        var findings: [Finding] = []
        var walWait = 0.0
        switch reading.walWait {
        case .read(let wait)?:
            walWait = wait
            if wait > 0 {
                findings.append((.walRate, "WAL over the budget of \(throttle.maxWalMBPerSecond) MB/s; next batch in \(Int((wait * 1000).rounded())) ms"))
            }
        case .unreadable(let message, let fix)?:
            findings += unreadable("the WAL position (pg_current_wal_lsn())", fix: fix, error: message)
        case nil:
            break
        }
        if let slow = reading.slow {
            lastSlowRead = now
            slowFindings = self.findings(slow)
        }
        findings += slowFindings
        let onlyWal = findings.allSatisfy { $0.reason == .walRate }
        retryAfter = onlyWal ? min(max(walWait, 0.02), interval) : interval
        guard let first = findings.first else { return nil }
        return (first.reason, findings.map(\.detail).joined(separator: "; "))
    }

    /// What the slow signals say, in the order they are read.
    func findings(_ slow: HealthReading.Slow) -> [Finding] {
        var findings: [Finding] = []
        if let replicas = slow.replicas {
            if throttle.maxReplicationLagMs > 0, replicas.hidden > 0, !throttle.failOpen {
                findings += unreadable("replica lag (pg_stat_replication hides it from this role)", fix: Self.grant("pg_read_all_stats"))
            } else if throttle.maxReplicationLagMs > 0, replicas.lagMs > Double(throttle.maxReplicationLagMs) {
                findings.append((.replicationLag, "replica replay lag \(Int(replicas.lagMs)) ms > \(throttle.maxReplicationLagMs) ms"))
            }
            if throttle.pauseDuringAutovacuum, replicas.vacuuming {
                findings.append((.autovacuum, "a vacuum is working on the table"))
            }
        }
        switch slow.slotLag {
        case .read(let worst?)? where worst.behindBytes > Double(throttle.maxSlotLagMB) * 1_048_576:
            findings.append((.slotLag, "replication slot \(worst.name) is \(Int(worst.behindBytes / 1_048_576)) MB behind > \(throttle.maxSlotLagMB) MB"))
        case .unreadable(let message, let fix)?:
            findings += unreadable("replication slot lag (pg_replication_slots)", fix: fix, error: message)
        default:
            break
        }
        switch slow.archiveBacklog {
        case .read(let backlog?)? where backlog > Int64(throttle.maxArchiveBacklog):
            findings.append((.archiveBacklog, "\(backlog) WAL segments wait for the archiver > \(throttle.maxArchiveBacklog)"))
        case .unreadable(let message, let fix)?:
            findings += unreadable("the archive backlog", fix: fix, error: message)
        default:
            break
        }
        if let ok = slow.checkSQL, ok != true {
            findings.append((.checkSQL, "check_sql returned \(ok.map(String.init) ?? "NULL")"))
        }
        return findings
    }

    static func grant(_ role: String) -> String { "GRANT \(role) TO the job's role" }

    /// A signal that cannot be read, as a finding; none with `fail_open`.
    private func unreadable(_ signal: String, fix: String, error: String? = nil) -> [Finding] {
        if throttle.failOpen { return [] }
        return [(.unreadable, "cannot read \(signal)\(error.map { ": \($0)" } ?? ""); \(fix), or set throttle.fail_open: true to run without it")]
    }
}
