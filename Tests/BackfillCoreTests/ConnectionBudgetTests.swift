@testable import BackfillCore
import Testing

@Suite("Connection budget and chunked counts")
struct ConnectionBudgetTests {
    @Test("a run needs a connection per worker, the coordinator's, the lease's and the watchdog's")
    func needed() {
        #expect(ConnectionBudget.needed(workers: 4, lease: true, watchdog: true) == 7)
        #expect(ConnectionBudget.needed(workers: 1, lease: false, watchdog: false) == 2)
    }

    @Test("the workers that fit: all, fewer, one without the watchdog, or none", arguments: [
        (nil, 4, true, false, ConnectionBudget.Fit.all),
        (5, 4, true, false, .all),
        (4, 4, true, false, .reduced(workers: 3, watchdog: true)),
        (2, 4, true, false, .reduced(workers: 1, watchdog: true)),
        (1, 4, true, false, .reduced(workers: 1, watchdog: false)),
        (0, 4, true, false, .none),
        // The lease not taken yet counts against the slots too.
        (2, 4, true, true, .reduced(workers: 1, watchdog: false)),
        (1, 1, false, true, .none),
        (3, 2, false, true, .all),
    ] as [(Int?, Int, Bool, Bool, ConnectionBudget.Fit)])
    func fit(free: Int?, workers: Int, watchdog: Bool, lease: Bool, expected: ConnectionBudget.Fit) {
        #expect(ConnectionBudget(free: free, limit: "role r has CONNECTION LIMIT 3").fit(workers: workers, watchdog: watchdog, lease: lease) == expected)
    }

    @Test("the message names the limit, the need and what runs")
    func message() {
        let budget = ConnectionBudget(free: 1, limit: "role \"app\" has CONNECTION LIMIT 3")
        let fit = budget.fit(workers: 4, watchdog: true)
        let line = budget.message(fit, workers: 4, lease: true, watchdog: true)
        #expect(line.contains("needs 7 connections"), "\(line)")
        #expect(line.contains("CONNECTION LIMIT 3, leaving 1 free: 1 of 4 workers run, and the watchdog is off"), "\(line)")
        let event = budget.event(fit, workers: 4, lease: true, watchdog: true)
        #expect(event.state == .reduced(needed: 7, free: 1, limit: "role \"app\" has CONNECTION LIMIT 3", workers: 1, watchdog: false) && event.message == line)
    }

    @Test("chunks aim at the target: grow at most fourfold, shrink at most by half, halve on a timeout")
    func chunkSizer() {
        var sizer = ChunkSizer(start: 1024, targetMs: 100)
        sizer.done(ms: 10)
        #expect(sizer.size == 4096)  // 10× would be the aim; ×4 at most
        sizer.done(ms: 100)
        #expect(sizer.size == 4096)
        sizer.done(ms: 1000)
        #expect(sizer.size == 2048)  // ÷10 would be the aim; ÷2 at most
        sizer.done(ms: 0)
        #expect(sizer.size == 8192)
        let retried = sizer.timedOut()
        #expect(retried)
        #expect(sizer.size == 4096)
    }

    @Test("a chunk that keeps timing out gives up after maxTimeouts in a row, at size 1")
    func chunkSizerGivesUp() {
        var sizer = ChunkSizer(start: 4, targetMs: 100)
        let tries = (0..<ChunkSizer.maxTimeouts).map { _ in sizer.timedOut() }
        #expect(tries.allSatisfy { $0 })
        #expect(sizer.size == 1)
        let gaveUp = !sizer.timedOut()
        #expect(gaveUp)
        var reset = ChunkSizer(start: 4, targetMs: 100)
        _ = reset.timedOut()
        reset.done(ms: 50)
        #expect(reset.timeouts == 0)
    }

    @Test("connection pins: READ COMMITTED and explicit bounds; version-gated settings only where the server has them")
    func pins() {
        let v15 = Dictionary(uniqueKeysWithValues: SessionPins.connection(serverVersion: 150_000).map { ($0.name, $0.value) })
        #expect(v15["default_transaction_isolation"] == "read committed")
        #expect(v15["statement_timeout"] == "60000ms")
        #expect(v15["lock_timeout"] == "5000ms")
        #expect(v15["idle_session_timeout"] == "0")
        #expect(v15["transaction_timeout"] == nil)
        #expect(v15["default_transaction_read_only"] == nil)
        #expect(v15["search_path"] == nil)
        let v13 = SessionPins.connection(serverVersion: 130_000).map(\.name)
        #expect(!v13.contains("idle_session_timeout"))
        #expect(SessionPins.connection(serverVersion: 170_000).contains { $0.name == "transaction_timeout" && $0.value == "0" })
    }
}
