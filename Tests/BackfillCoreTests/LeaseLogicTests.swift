@testable import BackfillCore
import Testing

@Suite("Lease keys and unlock decisions")
struct LeaseLogicTests {
    @Test("lease keys are 64-bit, stable and distinct for close names")
    func keys() {
        let names = (0..<2000).map { "job-\($0)" } + ["a", "b", "accounts-fill", "accounts-fill.", "Accounts-fill"]
        let keys = names.map(Lease.advisoryKey)
        #expect(Set(keys).count == names.count)
        #expect(Lease.advisoryKey("accounts-fill") == Lease.advisoryKey("accounts-fill"))
        // The high 32 bits are used too (the old key was a 32-bit hashtext).
        #expect(Set(keys.map { $0 >> 32 }).count > 1900)
    }

    @Test(
        "unlock frees a holder only when its heartbeat is stale, or with --force",
        arguments: [
            (Double?.some(61), 60.0, false, true), (.some(59), 60, false, false), (.some(59), 60, true, true),
            (nil, 60, false, false), (nil, 60, true, true), (.some(2.5), 2, false, true),
        ])
    func unlockDecision(age: Double?, staleAfter: Double, force: Bool, allowed: Bool) {
        #expect(UnlockOutcome.mayUnlock(heartbeatAge: age, staleAfter: staleAfter, force: force) == allowed)
    }
}
