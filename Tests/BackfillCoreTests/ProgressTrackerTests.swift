import BackfillCore
import Foundation
import Testing

@Suite("Progress and an honest ETA")
struct ProgressTrackerTests {
    let t0 = Date(timeIntervalSinceReferenceDate: 1_000_000)

    func event(_ body: RunEvent.Body, at seconds: Double) -> RunEvent {
        RunEvent(body, job: "j", time: t0.addingTimeInterval(seconds))
    }

    /// A committed batch of worker 0 up to `key`, the run's `rows` in all.
    func batch(rows: Int64, key: String) -> RunEvent.Body {
        .batch(.init(rows: 1000, batchSize: 1000, keys: 1000, duration: .milliseconds(10), attempt: 1, lastKey: [key], range: 0, rowsDone: rows, runRows: rows,
                     nextBatchSize: 1000, bound: .counted, worker: 0))
    }

    /// A run over keys 1…1,000,000 at 10,000 keys a second, one batch every 0.1 s.
    func batches(_ tracker: inout ProgressTracker, from: Double, to: Double, startKey: Int64) -> Int64 {
        var key = startKey
        var t = from
        while t < to - 1e-9 {
            t += 0.1
            key += 1000
            tracker.consume(event(batch(rows: key, key: String(key)), at: t))
        }
        return key
    }

    func started(estimate: Int64? = 1_000_000, keyRange: Bool = true) -> ProgressTracker {
        var tracker = ProgressTracker()
        let start = RunEvent.Start(table: "t", action: "update", rowsEstimate: estimate, rowsDoneBefore: 0, batchSize: 1000, target: .milliseconds(50),
                                   keyIndex: "t_pkey", runner: "h:1", runID: "r", keyBounds: keyRange ? .init(min: 1, max: 1_000_000) : nil,
                                   mode: .run(workers: 1, ranges: 1))
        tracker.consume(event(.start(start), at: 0))
        return tracker
    }

    @Test("a 5 s health throttle does not move the ETA; the throttled time shows apart")
    func throttleDoesNotJump() {
        var tracker = started()
        let key = batches(&tracker, from: 0, to: 10, startKey: 0)
        let before = try! #require(tracker.eta(at: t0.addingTimeInterval(10)))
        #expect(abs(before - 90) < 1, "\(before)")
        tracker.consume(event(.throttle(.init(cause: .waiting(.slotLag, detail: "slot s is 2 GB behind"), worker: 0)), at: 10))
        let during = try! #require(tracker.eta(at: t0.addingTimeInterval(13)))
        tracker.consume(event(.throttle(.init(cause: .resumed(.slotLag, waited: .seconds(5)), worker: 0)), at: 15))
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
            tracker.consume(event(batch(rows: key, key: String(key)), at: t))
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
            tracker.consume(event(batch(rows: rows, key: "9f1c…"), at: t))
            #expect((tracker.fraction ?? 0) <= 1)
        }
        #expect((tracker.fraction ?? 2) < 1)
        var early = started(estimate: 50_000, keyRange: false)
        early.consume(event(batch(rows: 5000, key: "a"), at: 1))
        early.consume(event(batch(rows: 10000, key: "b"), at: 2))
        #expect(early.line(at: t0.addingTimeInterval(2)).contains("ETA ~0:08 by row estimate"), "\(early.line(at: t0.addingTimeInterval(2)))")
    }

    @Test("the WAL budget's waits are the job's pace, not a throttle to leave out")
    func budgetIsPace() {
        var tracker = started()
        _ = batches(&tracker, from: 0, to: 2, startKey: 0)
        tracker.consume(event(.throttle(.init(cause: .waiting(.walRate, detail: "WAL budget"), worker: 0)), at: 2))
        tracker.consume(event(.throttle(.init(cause: .resumed(.walRate, waited: .seconds(2)), worker: 0)), at: 4))
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
