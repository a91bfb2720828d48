@testable import BackfillCore
import Foundation
import PostgresClient

/// A `BatchSession` without a database: a table of integer keys split into ranges, whose
/// checkpoints move only when a batch commits, so that a test can check every key was written
/// exactly once; faults are injected per step (`fail`), and every step is recorded (`calls`).
class ScriptedSession: BatchSession, @unchecked Sendable {
    struct Range {
        var lower: Int?
        var ceiling: Int?
        var checkpoint: Int?
        var done = false
    }

    /// The keys of the table, ascending.
    var keys: [Int]
    var ranges: [Range]
    /// How often each key was written by a committed batch.
    private(set) var writes: [Int: Int] = [:]
    /// Keys whose row fails with a data error (22P02) whenever it is written.
    var bad: Set<Int> = []
    private(set) var quarantined: [Int] = []
    var jobStateValue: JobState = .running
    var tuning: Tuning?
    /// The slow health signals, read in turn when the worker asks for them; all quiet when none
    /// is left.
    var health: [HealthReading.Slow] = []
    private(set) var slowReads = 0
    var throttles: [String?] = []
    /// Called before each step with its name and how many steps ran before it; returns an error
    /// to fail the step with (and how long the watchdog saw a waiter wait, if it cancelled it).
    var fail: (String, Int) -> (PostgresError, Duration?)? = { _, _ in nil }
    /// Called before each step (to change the world: pause the job, tune it).
    var before: (String, Int) -> Void = { _, _ in }
    private(set) var calls: [String] = []
    private(set) var watchdogWaited: Duration?
    private var open: (range: Int, pending: [Int])?
    private var probeWritten: [Int] = []

    init(keys: [Int], ranges: Int = 1) {
        self.keys = keys
        let per = (keys.count + ranges - 1) / max(ranges, 1)
        self.ranges = (0..<ranges).map { r in
            Range(lower: r == 0 ? nil : keys[r * per - 1], ceiling: r == ranges - 1 ? nil : keys[min((r + 1) * per, keys.count) - 1])
        }
    }

    var connected = false
    var connects = 0

    private func step(_ name: String) throws {
        let n = calls.count
        calls.append(name)
        before(name, n)
        watchdogWaited = nil
        if let (error, waited) = fail(name, n) {
            watchdogWaited = waited
            throw error
        }
        if name != "connect", !connected { throw PostgresError(code: .connectionFailure, message: "no connection") }
    }

    func connect() throws -> String? {
        try step("connect")
        connected = true
        connects += 1
        return nil
    }

    func disconnect() {
        calls.append("disconnect")
        connected = false
    }

    func claim(preferring range: Int?) throws -> RangeClaim? {
        try step("claim")
        let free = ranges.indices.filter { !ranges[$0].done }
        guard let index = range.flatMap({ free.contains($0) ? $0 : nil }) ?? free.first else {
            open = (-1, [])
            return nil
        }
        open = (index, [])
        let r = ranges[index]
        return RangeClaim(range: index, lower: (r.checkpoint ?? r.lower).map { [String($0)] }, ceiling: r.ceiling.map { [String($0)] },
                          jobState: jobStateValue, tuning: tuning)
    }

    private func keys(after lower: [String]?, atMost ceiling: Int?) -> [Int] {
        let from = lower.flatMap { Int($0[0]) }
        return keys.filter { key in from.map { key > $0 } ?? true && ceiling.map { key <= $0 } ?? true }
    }

    func upperKey(_ claim: RangeClaim, size: Int, bySpan: Bool) throws -> UpperKey? {
        try step("upperKey")
        let next = keys(after: claim.lower, atMost: ranges[claim.range].ceiling).prefix(size)
        guard let last = next.last else { return nil }
        return UpperKey(key: [String(last)], walked: next.count, bound: .counted)
    }

    func firstKey(_ claim: RangeClaim, atMost upper: [String]) throws -> [String]? {
        try step("firstKey")
        return keys(after: claim.lower, atMost: Int(upper[0])).first.map { [String($0)] }
    }

    func completeRange(_ claim: RangeClaim) throws {
        try step("completeRange")
        ranges[claim.range].done = true
        open = nil
    }

    func write(_ write: BatchWrite) throws -> Written {
        try step(write.single ? "writePart" : "write")
        let batch = keys(after: write.claim.lower, atMost: Int(write.upper[0]))
        if let key = batch.first(where: bad.contains) {
            throw PostgresError(code: "22P02", message: "invalid input syntax for type integer", detail: "key \(key)")
        }
        commit(batch, range: write.claim.range, upper: write.upper)
        return Written(rows: Int64(batch.count))
    }

    private func commit(_ batch: [Int], range: Int, upper: [String]) {
        for key in batch { writes[key, default: 0] += 1 }
        ranges[range].checkpoint = Int(upper[0])
        open = nil
    }

    func quarantine(_ write: BatchWrite, error: PostgresError) throws -> Int64 {
        try step("quarantine")
        quarantined.append(Int(write.upper[0])!)
        return Int64(quarantined.count)
    }

    func commitQuarantine(_ write: BatchWrite) throws {
        try step("commitQuarantine")
        ranges[write.claim.range].checkpoint = Int(write.upper[0])
        open = nil
    }

    func rollback() {
        calls.append("rollback")
        if !quarantined.isEmpty, open != nil, calls.dropLast().last == "quarantine" { quarantined.removeLast() }
        open = nil
        probeWritten = []
    }

    func splitPoint(lower: [String]?, upper: [String], offset: Int) throws -> (key: [String], walked: Int)? {
        try step("splitPoint")
        let part = keys(after: lower, atMost: Int(upper[0]))
        guard offset < part.count else { return nil }
        return ([String(part[offset])], offset + 1)
    }

    func beginProbe() throws { try step("beginProbe") }

    func probe(lower: [String]?, upper: [String]) throws {
        try step("probe")
        let part = keys(after: lower, atMost: Int(upper[0]))
        if part.contains(where: bad.contains) { throw PostgresError(code: "22P02", message: "invalid input syntax for type integer") }
        probeWritten += part
    }

    func undoProbe() throws { try step("undoProbe") }

    func readHealth(slow: Bool) throws -> HealthReading {
        try step("readHealth")
        guard slow else { return HealthReading() }
        slowReads += 1
        return HealthReading(slow: health.isEmpty ? HealthReading.Slow() : health.removeFirst())
    }

    func setThrottle(_ reason: ThrottleReason?, detail: String?) throws {
        try step("setThrottle")
        throttles.append(reason?.rawValue)
    }

    func jobState() throws -> JobState? {
        try step("jobState")
        return jobStateValue
    }

    func consumeRate(rows: Int64, rowsPerSecond: Int) throws -> Duration {
        try step("consumeRate")
        return .milliseconds(Int64(rows) * 1000 / Int64(max(rowsPerSecond, 1)))
    }

    func openRanges() throws -> Int {
        try step("openRanges")
        return ranges.filter { !$0.done }.count
    }

    func splitLargestRange(minimumRows: Int64) throws -> Bool {
        try step("split")
        return false
    }

    func heartbeat(range: Int?, rowsDone: Int64) { calls.append("heartbeat") }
}

/// A clock that moves only when the worker sleeps.
final class ManualClock: WorkerClock, @unchecked Sendable {
    var elapsedTime: Duration = .zero
    private(set) var slept: [Duration] = []
    private var restUntil: Duration = .zero
    /// Time each step takes (the clock moves by it at every look, so that time passes).
    var tick: Duration = .milliseconds(1)

    func sleep(_ duration: Duration) {
        slept.append(duration)
        elapsedTime += duration
    }

    func restAll(for duration: Duration) { restUntil = max(restUntil, elapsedTime + duration) }

    var sharedRest: Duration {
        elapsedTime += tick
        return max(.zero, restUntil - elapsedTime)
    }
}
