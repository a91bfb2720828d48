import BackfillCore
import Testing

@Suite("WAL budget and archive backlog")
struct WalBudgetTests {
    let mb: UInt64 = 1_048_576

    @Test("a writer that follows the waits stays at the budget: 5 MB/s over 60 s of 2 MB batches")
    func holdsTheRate() {
        var budget = WalBudget(mbPerSecond: 5)
        var now = 0.0
        var lsn: UInt64 = 1_000_000
        _ = budget.observe(lsn: lsn, now: now)
        while now < 60 {
            lsn += 2 * mb                 // one batch: 2 MB of WAL in 50 ms
            now += 0.05
            now += budget.observe(lsn: lsn, now: now)
        }
        let rate = Double(lsn - 1_000_000) / Double(mb) / now
        #expect(rate > 4.8 && rate < 5.3, "\(rate) MB/s")
    }

    @Test("WAL under the budget never waits; one second's burst is allowed, more is paid back")
    func burst() {
        var budget = WalBudget(mbPerSecond: 10)
        #expect(budget.observe(lsn: 0, now: 0) == 0)
        #expect(budget.observe(lsn: 5 * mb, now: 1) == 0)
        #expect(budget.observe(lsn: 9 * mb, now: 1.5) == 0)
        let wait = budget.observe(lsn: 39 * mb, now: 2)    // 30 MB in 0.5 s against a full bucket of 10 MB: 20 MB over
        #expect(abs(wait - 2.0) < 0.01, "\(wait)")
    }

    @Test("a stale sample (a run hours later) or a position that went back restarts the budget")
    func stale() {
        var budget = WalBudget(mbPerSecond: 1, tokens: -50 * 1_048_576, lastLSN: 0, lastSeconds: 0)
        #expect(budget.observe(lsn: 10_000 * mb, now: 3600) == 0)
        var back = WalBudget(mbPerSecond: 1, tokens: 0, lastLSN: 100 * mb, lastSeconds: 0)
        #expect(back.observe(lsn: 1 * mb, now: 1) == 0)
    }

    @Test("0 MB/s is off")
    func off() {
        var budget = WalBudget(mbPerSecond: 0)
        _ = budget.observe(lsn: 0, now: 0)
        #expect(budget.observe(lsn: 1 << 40, now: 0.1) == 0)
    }

    @Test("archive backlog from pg_stat_archiver: segments between the last archived and the current one",
          arguments: [
              ("000000010000000000000003", "000000010000000000000004", Int64(16 << 20), Int64(0)),
              ("000000010000000000000003", "00000001000000000000000A", Int64(16 << 20), Int64(6)),
              ("0000000100000000000000FF", "000000010000000100000001", Int64(16 << 20), Int64(1)),   // across a log file: 256 segments of 16 MB each
              ("000000010000000000000003.partial", "000000020000000000000005", Int64(16 << 20), Int64(1)),
              ("00000001000000000000003F", "000000010000000100000000", Int64(64 << 20), Int64(0)),
          ])
    func archiveEstimate(last: String, current: String, segment: Int64, expected: Int64) {
        #expect(ArchiveBacklog.estimate(lastArchived: last, current: current, segmentBytes: segment) == expected)
    }

    @Test("a name that is not a WAL file gives no estimate")
    func badName() {
        #expect(ArchiveBacklog.estimate(lastArchived: "00000001.history", current: "000000010000000000000004", segmentBytes: 16 << 20) == nil)
    }
}
