import BackfillCore
import Foundation
import PostgresClient
import Testing

@Suite("An honest ETA")
struct EtaTests {
    @Test("the ETA during a run with a forced 5 s throttle does not jump by the throttled time")
    func throttleDoesNotMoveTheEta() throws {
        let (url, db) = try itemsDatabase("eta", rows: 200_000)
        try db.execute("CREATE TABLE gate (go boolean NOT NULL); INSERT INTO gate VALUES (true);")
        let flipper = Thread {
            guard let c = try? Connection(url) else { return }
            Thread.sleep(forTimeInterval: 3)
            _ = try? c.execute("UPDATE gate SET go = false")
            Thread.sleep(forTimeInterval: 5)
            _ = try? c.execute("UPDATE gate SET go = true")
        }
        flipper.start()
        let (outcome, events) = try runJob(
            itemsJob(name: "eta", extra: "throttle: {max_rows_per_second: 20000, when_blocking: false, check_sql: 'SELECT go FROM gate'}"), url: url)
        guard case .done = outcome else { Issue.record("\(outcome)"); return }
        var tracker = ProgressTracker()
        var before: Double?
        var after: Double?
        var resumed = false
        for event in events {
            tracker.consume(event)
            if event.kind == .throttle, event["reason"] == .string("check_sql") {
                if event["state"] == .string("waiting") { before = tracker.eta(at: event.time) }
                if event["state"] == .string("resumed") { resumed = true }
            } else if resumed, after == nil, event.kind == .batch {
                after = tracker.eta(at: event.time)
            }
        }
        let (b, a) = (try #require(before), try #require(after))
        #expect(abs(a - b) < 2, "ETA \(b) s before the 5 s throttle, \(a) s after")
        #expect(tracker.throttledSeconds > 3.5 && tracker.throttledSeconds < 7, "\(tracker.throttledSeconds) s throttled")
        try expectExactlyOnce(db, rows: 200_000)
    }
}
