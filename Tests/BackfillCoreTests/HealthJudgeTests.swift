@testable import BackfillCore
import Testing

/// The health judge's decisions from readings written in the test: no database, no clock.
@Suite("Health judge")
struct HealthJudgeTests {
    func throttle(_ change: (inout JobSpec.Throttle) -> Void = { _ in }) -> JobSpec.Throttle {
        var throttle = JobSpec.Throttle()
        change(&throttle)
        return throttle
    }

    func slow(replicas: HealthReading.Replicas? = nil, slot: HealthReading.Outcome<HealthReading.Slot?>? = nil,
              archive: HealthReading.Outcome<Int64?>? = nil, checkSQL: Bool?? = nil) -> HealthReading {
        HealthReading(walWait: nil, slow: .init(replicas: replicas, slotLag: slot, archiveBacklog: archive, checkSQL: checkSQL))
    }

    let mb = 1_048_576.0

    @Test("healthy signals: no reason")
    func healthy() {
        var judge = HealthJudge(throttle: throttle { $0.maxWalMBPerSecond = 5; $0.checkSQL = "true"; $0.maxArchiveBacklog = 10 })
        var reading = slow(replicas: .init(lagMs: 50), slot: .read(.init(name: "s", behindBytes: 10 * mb)), archive: .read(3), checkSQL: true)
        reading.walWait = .read(0)
        #expect(judge.judge(reading, at: 0) == nil)
        #expect(judge.judge(slow(slot: .read(nil), archive: .read(nil)), at: 1) == nil)
    }

    @Test("each reason with its detail", arguments: [
        (HealthJudgeTests.Case.lag, HealthGate.Reason.replicationLag, "replica replay lag 12500 ms > 10000 ms"),
        (.vacuum, .autovacuum, "a vacuum is working on the table"),
        (.slot, .slotLag, "replication slot cdc is 2048 MB behind > 1024 MB"),
        (.archive, .archiveBacklog, "12 WAL segments wait for the archiver > 10"),
        (.checkFalse, .checkSQL, "check_sql returned false"),
        (.checkNull, .checkSQL, "check_sql returned NULL"),
        (.hidden, .unreadable, "cannot read replica lag (pg_stat_replication hides it from this role); GRANT pg_read_all_stats TO the job's role, or set throttle.fail_open: true to run without it"),
    ])
    func reason(_ signal: Case, _ reason: HealthGate.Reason, _ detail: String) {
        var judge = HealthJudge(throttle: throttle { $0.pauseDuringAutovacuum = true; $0.maxArchiveBacklog = 10; $0.checkSQL = "ok()" })
        let found = judge.judge(signal.reading(self), at: 0)
        #expect(found?.0 == reason)
        #expect(found?.1 == detail)
        #expect(judge.retryAfter == 1)
    }

    enum Case: Sendable, CustomTestStringConvertible {
        case lag, vacuum, slot, archive, checkFalse, checkNull, hidden
        var testDescription: String { "\(self)" }
        func reading(_ t: HealthJudgeTests) -> HealthReading {
            switch self {
            case .lag: t.slow(replicas: .init(lagMs: 12_500.7))
            case .vacuum: t.slow(replicas: .init(vacuuming: true))
            case .slot: t.slow(slot: .read(.init(name: "cdc", behindBytes: 2048.5 * t.mb)))
            case .archive: t.slow(archive: .read(12))
            case .checkFalse: t.slow(checkSQL: false)
            case .checkNull: t.slow(checkSQL: .some(nil))
            case .hidden: t.slow(replicas: .init(lagMs: 99_999, hidden: 1))
            }
        }
    }

    @Test("signals at their limit do not throttle")
    func atTheLimit() {
        var judge = HealthJudge(throttle: throttle { $0.maxArchiveBacklog = 10 })
        #expect(judge.judge(slow(replicas: .init(lagMs: 10_000), slot: .read(.init(name: "s", behindBytes: 1024 * mb)), archive: .read(10)), at: 0) == nil)
    }

    @Test("several reasons: the first is the reason, the details of all are joined in reading order")
    func several() {
        var judge = HealthJudge(throttle: throttle { $0.pauseDuringAutovacuum = true; $0.maxWalMBPerSecond = 5; $0.checkSQL = "ok()" })
        var reading = slow(replicas: .init(lagMs: 20_000, vacuuming: true), checkSQL: false)
        reading.walWait = .read(0.25)
        let found = judge.judge(reading, at: 0)
        #expect(found?.0 == .walRate)
        #expect(found?.1 == "WAL over the budget of 5 MB/s; next batch in 250 ms; replica replay lag 20000 ms > 10000 ms; a vacuum is working on the table; check_sql returned false")
        #expect(judge.retryAfter == 1, "not only the WAL budget: wait the interval")
    }

    @Test("a signal that cannot be read throttles with the error and the fix")
    func unreadable() {
        var judge = HealthJudge(throttle: throttle { $0.maxWalMBPerSecond = 5; $0.maxArchiveBacklog = 10 })
        var reading = slow(slot: .unreadable(message: "permission denied for view pg_replication_slots", fix: "GRANT pg_monitor TO the job's role"),
                           archive: .unreadable(message: "no archiver", fix: "fix what the server says"))
        reading.walWait = .unreadable(message: "boom", fix: "fix what the server says")
        let found = judge.judge(reading, at: 0)
        #expect(found?.0 == .unreadable)
        #expect(found?.1 == [
            "cannot read the WAL position (pg_current_wal_lsn()): boom; fix what the server says, or set throttle.fail_open: true to run without it",
            "cannot read replication slot lag (pg_replication_slots): permission denied for view pg_replication_slots; GRANT pg_monitor TO the job's role, or set throttle.fail_open: true to run without it",
            "cannot read the archive backlog: no archiver; fix what the server says, or set throttle.fail_open: true to run without it",
        ].joined(separator: "; "))
        #expect(judge.retryAfter == 1)
    }

    @Test("fail_open: unreadable signals are left out; hidden replicas fall back to the lag that can be seen")
    func failOpen() {
        var judge = HealthJudge(throttle: throttle { $0.failOpen = true; $0.maxWalMBPerSecond = 5; $0.maxArchiveBacklog = 10 })
        var reading = slow(replicas: .init(lagMs: 0, hidden: 2), slot: .unreadable(message: "denied", fix: "grant"), archive: .unreadable(message: "x", fix: "y"))
        reading.walWait = .unreadable(message: "boom", fix: "fix")
        #expect(judge.judge(reading, at: 0) == nil)
        #expect(judge.retryAfter == 0.02, "nothing but the (unread) WAL budget: the short wait")
        let lagging = judge.judge(slow(replicas: .init(lagMs: 15_000, hidden: 1)), at: 1)
        #expect(lagging?.0 == .replicationLag)
        #expect(lagging?.1 == "replica replay lag 15000 ms > 10000 ms")
    }

    @Test("signals that are not configured are not judged, whatever they say")
    func notConfigured() {
        var judge = HealthJudge(throttle: throttle { $0.maxReplicationLagMs = 0; $0.maxSlotLagMB = 0 })
        #expect(judge.judge(slow(replicas: .init(lagMs: 1e9, hidden: 3, vacuuming: true)), at: 0) == nil)
    }

    @Test("the slow signals are reused until due again, `interval` after they were read")
    func interval() {
        var judge = HealthJudge(throttle: throttle { $0.maxWalMBPerSecond = 5 }, interval: 2)
        #expect(judge.isDue(at: 0))
        #expect(judge.judge(slow(replicas: .init(lagMs: 30_000)), at: 0)?.0 == .replicationLag)
        #expect(!judge.isDue(at: 1.9))
        // A check between readings carries only the WAL charge: the lag found before still holds.
        let between = judge.judge(HealthReading(walWait: .read(0)), at: 1)
        #expect(between?.0 == .replicationLag)
        #expect(between?.1 == "replica replay lag 30000 ms > 10000 ms")
        #expect(judge.isDue(at: 2))
        #expect(judge.judge(slow(replicas: .init(lagMs: 10)), at: 2) == nil)
        #expect(judge.judge(HealthReading(walWait: .read(0)), at: 3) == nil)
    }

    @Test("a slow reading that was tried counts as read: not due again before the interval")
    func triedReading() {
        var judge = HealthJudge(throttle: throttle(), interval: 1)
        judge.slowSignalsRead(at: 5)
        #expect(!judge.isDue(at: 5.5))
        #expect(judge.isDue(at: 6))
    }

    @Test("WAL over budget alone: check again after the budget's wait, at least 20 ms, at most the interval",
          arguments: [(0.25, 0.25), (0.001, 0.02), (7.5, 1.0)])
    func walRetry(wait: Double, retry: Double) {
        var judge = HealthJudge(throttle: throttle { $0.maxWalMBPerSecond = 5 })
        let found = judge.judge(HealthReading(walWait: .read(wait), slow: .init()), at: 0)
        #expect(found?.0 == .walRate)
        #expect(found?.1 == "WAL over the budget of 5 MB/s; next batch in \(Int((wait * 1000).rounded())) ms")
        #expect(judge.retryAfter == retry)
    }
}
