import BackfillCore
import Foundation
import Testing

@Suite("Progress and an honest ETA")
struct ProgressTrackerTests {
    let t0 = Date(timeIntervalSinceReferenceDate: 1_000_000)

    func event(_ kind: RunEvent.Kind, at seconds: Double, _ fields: [(String, RunEvent.Value)] = []) -> RunEvent {
        RunEvent(kind, job: "j", time: t0.addingTimeInterval(seconds), fields)
    }

    /// A run over keys 1…1,000,000 at 10,000 keys a second, one batch every 0.1 s.
    func batches(_ tracker: inout ProgressTracker, from: Double, to: Double, startKey: Int64) -> Int64 {
        var key = startKey
        var t = from
        while t < to - 1e-9 {
            t += 0.1
            key += 1000
            tracker.consume(event(.batch, at: t, [("rows", .int(1000)), ("rows_done", .int(key)), ("run_rows", .int(key)), ("last_key", .strings([String(key)]))]))
        }
        return key
    }

    func started(estimate: Int64? = 1_000_000, keyRange: Bool = true) -> ProgressTracker {
        var tracker = ProgressTracker()
        var fields: [(String, RunEvent.Value)] = [("rows_done_before", .int(0))]
        if let estimate { fields.append(("rows_estimate", .int(estimate))) }
        if keyRange { fields += [("key_min", .double(1)), ("key_max", .double(1_000_000))] }
        tracker.consume(event(.start, at: 0, fields))
        return tracker
    }

    @Test("a 5 s health throttle does not move the ETA; the throttled time shows apart")
    func throttleDoesNotJump() {
        var tracker = started()
        let key = batches(&tracker, from: 0, to: 10, startKey: 0)
        let before = try! #require(tracker.eta(at: t0.addingTimeInterval(10)))
        #expect(abs(before - 90) < 1, "\(before)")
        tracker.consume(event(.throttle, at: 10, [("reason", .string("slot_lag")), ("state", .string("waiting")), ("worker", .int(0))]))
        let during = try! #require(tracker.eta(at: t0.addingTimeInterval(13)))
        tracker.consume(event(.throttle, at: 15, [("reason", .string("slot_lag")), ("state", .string("resumed")), ("worker", .int(0))]))
        _ = batches(&tracker, from: 15, to: 15.5, startKey: key)
        let after = try! #require(tracker.eta(at: t0.addingTimeInterval(15.5)))
        #expect(abs(during - before) < 0.5, "during \(during) vs \(before)")
        #expect(abs(after - (before - 0.5)) < 1, "after \(after) vs \(before)")   // the old estimate was 5 s × 9 later
        #expect(abs(tracker.throttledSeconds - 5) < 0.01 && abs(tracker.activeSeconds - 10.5) < 0.01)
        #expect(tracker.line(at: t0.addingTimeInterval(15.5)).contains("(throttled 0:05)"))
    }

    @Test("the rate is that of the last minute: a job that slowed down says so")
    func movingWindow() {
        var tracker = started()
        var key = batches(&tracker, from: 0, to: 60, startKey: 0)       // 10,000 keys/s
        var t = 60.0
        while t < 150 {                                                 // then 2,000 keys/s
            t += 0.5
            key += 1000
            tracker.consume(event(.batch, at: t, [("rows_done", .int(key)), ("run_rows", .int(key)), ("last_key", .strings([String(key)]))]))
        }
        let eta = try! #require(tracker.eta(at: t0.addingTimeInterval(t)))
        let expected = Double(1_000_000 - key) / 2000
        #expect(abs(eta - expected) / expected < 0.05, "\(eta) vs \(expected)")
    }

    @Test("a uuid or text key: % done from rows against the estimate, never above 100 %, and the ETA says what it rests on")
    func unmeasurableKey() {
        var tracker = started(estimate: 50_000, keyRange: false)
        #expect(tracker.basis == .rowEstimate)
        for (i, t) in stride(from: 0.5, through: 10, by: 0.5).enumerated() {
            let rows = Int64(i + 1) * 4000                              // ends at 80,000: the estimate was low
            tracker.consume(event(.batch, at: t, [("rows_done", .int(rows)), ("run_rows", .int(rows)), ("last_key", .strings(["9f1c…"]))]))
            #expect((tracker.fraction ?? 0) <= 1)
        }
        #expect((tracker.fraction ?? 2) < 1)
        var early = started(estimate: 50_000, keyRange: false)
        early.consume(event(.batch, at: 1, [("rows_done", .int(5000)), ("run_rows", .int(5000)), ("last_key", .strings(["a"]))]))
        early.consume(event(.batch, at: 2, [("rows_done", .int(10000)), ("run_rows", .int(10000)), ("last_key", .strings(["b"]))]))
        #expect(early.line(at: t0.addingTimeInterval(2)).contains("ETA ~0:08 by row estimate"), "\(early.line(at: t0.addingTimeInterval(2)))")
    }

    @Test("the WAL budget's waits are the job's pace, not a throttle to leave out")
    func budgetIsPace() {
        var tracker = started()
        _ = batches(&tracker, from: 0, to: 2, startKey: 0)
        tracker.consume(event(.throttle, at: 2, [("reason", .string("wal_rate")), ("state", .string("waiting")), ("worker", .int(0))]))
        tracker.consume(event(.throttle, at: 4, [("reason", .string("wal_rate")), ("state", .string("resumed")), ("worker", .int(0))]))
        #expect(tracker.throttledSeconds == 0 && abs(tracker.activeSeconds - 4) < 0.01)
    }

    @Test("the window's rate: active time only, none before two points")
    func window() {
        var w = EtaWindow(windowSeconds: 10)
        #expect(w.rate == nil)
        w.record(progress: 0, at: 0)
        w.setThrottled(true, at: 1)
        w.setThrottled(false, at: 101)
        w.record(progress: 0.5, at: 102)
        #expect(w.rate == 0.25 && w.eta(progress: 0.5, total: 1) == 2)
        #expect(w.throttledSeconds == 100 && w.activeSeconds == 2)
    }
}

@Suite("The ETA status shows")
struct RunEstimateTests {
    @Test("keys left at the rate of active time: throttled time does not count", arguments: [
        (100.0, 0.0, Int64(50_000), Int64(50_000), 100.0 as Double?),
        (100.0, 60.0, Int64(40_000), Int64(40_000), 40.0),       // 40 s of work for 40k keys: 40 s left, not 100
        (0.5, 0.0, Int64(10), Int64(10), nil),                    // not yet measurable
        (100.0, 100.0, Int64(0), Int64(5), nil),                  // throttled from the start
        (10.0, 0.0, Int64(1000), Int64(0), 0.0),
    ])
    func eta(run: Double, throttled: Double, keys: Int64, left: Int64, expected: Double?) {
        #expect(RunEstimate(runSeconds: run, throttledSeconds: throttled, runKeys: keys, keysLeft: left).etaSeconds == expected)
    }
}
