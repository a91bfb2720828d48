@testable import BackfillCore
import Foundation
import PostgresClient
import Synchronization
import Testing

/// The worker loop end to end, machine and dispatcher, over a scripted session and a manual
/// clock: no database, no real time. Every walk is checked row by row.
@Suite("Worker loop without a database")
struct WorkerLoopTests {
    final class Events: Sendable {
        private let list = Mutex<[RunEvent]>([])
        func add(_ event: RunEvent) { list.withLock { $0.append(event) } }
        var all: [RunEvent] { list.withLock { $0 } }
        func of(_ kind: RunEvent.Kind) -> [RunEvent] { all.filter { $0.kind == kind } }
    }

    struct Run {
        var result: WorkerResult
        var session: ScriptedSession
        var events: Events
        var clock: ManualClock
        var context: RunContext
    }

    /// Runs worker `index` of a job over `session` (the job's `when_blocking` is off unless the
    /// YAML turns it on, so that no watchdog thread starts).
    func run(_ yaml: String = "", session: ScriptedSession, index: Int = 0, maxRuntime: Double? = nil, setUp: (RunContext) -> Void = { _ in }) throws -> Run {
        let throttle = yaml.contains("throttle:") ? "" : "throttle: {when_blocking: false}\n"
        let spec = try JobSpec.parse(yaml: "name: loop\ntable: t\nkey: [id]\nset: {a: 1}\n" + throttle + yaml, file: "loop.yaml")
        var options = RunOptions(database: "host=/nonexistent")
        options.dryRun = true
        options.maxRuntime = maxRuntime
        let events = Events()
        let context = RunContext(spec: spec, options: options, stop: StopSignal(), emit: { events.add($0) })
        setUp(context)
        let clock = ManualClock()
        let result = Worker(context: context, session: session, index: index, clock: clock).run()
        return Run(result: result, session: session, events: events, clock: clock, context: context)
    }

    func writtenOnce(_ session: ScriptedSession, except skipped: Set<Int> = []) -> Bool {
        session.keys.allSatisfy { skipped.contains($0) ? session.writes[$0] == nil : session.writes[$0] == 1 }
    }

    @Test("a walk: every key written once, in batches of the size asked, a batch event each, then done")
    func walks() throws {
        let session = ScriptedSession(keys: Array(1...2500), ranges: 2)
        let run = try run("batch: {size: 1000, max: 1000}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session))
        let batches = run.events.of(.batch)
        #expect(batches.map { $0["rows"] } .compactMap { if case .int(let n) = $0 { n } else { nil } }.reduce(0, +) == 2500)
        #expect(batches.allSatisfy { $0["worker"] == .int(0) && $0["bound"] == .string("counted") })
        #expect(session.calls.first == "connect" && session.calls.last == "disconnect" && session.calls.contains("heartbeat"))
        #expect(session.calls.filter { $0 == "completeRange" }.count == 2)
    }

    @Test("a pause during the rest between batches: the next claim sees it, rolls back and stops; nothing more is written")
    func pauseDuringRest() throws {
        let session = ScriptedSession(keys: Array(1...5000))
        session.before = { name, _ in
            if name == "claim", session.writes.count == 1000 { session.jobStateValue = .paused }
        }
        let run = try run("batch: {size: 1000, max: 1000, pause_ms: 500}", session: session)
        guard case .stopped(.paused) = run.result else { Issue.record("expected a pause, got \(run.result)"); return }
        #expect(session.writes.count == 1000 && session.writes.values.allSatisfy { $0 == 1 })
        #expect(run.clock.slept.contains(.milliseconds(500)))
        #expect(Array(session.calls.suffix(3)) == ["claim", "rollback", "disconnect"])
    }

    @Test("a pause while a health throttle holds the job: the wait ends, the throttle is cleared, the worker stops paused")
    func pauseWhileThrottled() throws {
        let session = ScriptedSession(keys: Array(1...100))
        let lag = HealthReading.Slow(replicas: .init(lagMs: 20_000))
        session.health = [lag, lag, lag]
        session.before = { name, n in if name == "jobState", session.calls.filter({ $0 == "jobState" }).count == 2 { session.jobStateValue = .paused } }
        let run = try run(session: session)
        guard case .stopped(.paused) = run.result else { Issue.record("expected a pause, got \(run.result)"); return }
        #expect(session.writes.isEmpty)
        #expect(session.throttles == ["replication_lag", nil])
        let throttles = run.events.of(.throttle)
        #expect(throttles.count == 1 && throttles[0]["state"] == .string("waiting") && throttles[0]["reason"] == .string("replication_lag"))
        #expect(run.context.summary(state: .paused).throttledSeconds["replication_lag"] ?? 0 >= 1)
    }

    @Test("a health wait that ends: waiting, resumed with its length, then the walk")
    func healthResumes() throws {
        let session = ScriptedSession(keys: Array(1...100))
        session.health = [HealthReading.Slow(checkSQL: .some(false)), HealthReading.Slow(checkSQL: .some(false))]
        let run = try run("throttle: {when_blocking: false, check_sql: \"SELECT go FROM gate\"}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session))
        let states = run.events.of(.throttle).map { $0["state"] }
        #expect(states == [.string("waiting"), .string("resumed")])
        if case .double(let ms)? = run.events.of(.throttle).last?["wait_ms"] { #expect(ms >= 2000 && ms < 2100) } else { Issue.record("no wait_ms") }
        #expect(run.events.of(.throttle).first?["detail"] == .string("check_sql returned false"))
        #expect(session.throttles == ["check_sql", nil])
    }

    @Test("healthy: the slow signals are read once a second, not before every batch; a WAL budget is charged before each")
    func healthCadence() throws {
        let plain = ScriptedSession(keys: Array(1...3000))
        let quiet = try run("batch: {size: 100, max: 100}", session: plain)
        guard case .done = quiet.result else { Issue.record("expected done, got \(quiet.result)"); return }
        #expect(quiet.clock.elapsedTime < .seconds(1))
        #expect(plain.calls.filter { $0 == "write" }.count == 30)
        #expect(plain.calls.filter { $0 == "readHealth" }.count == 1 && plain.slowReads == 1)
        let budget = ScriptedSession(keys: Array(1...3000))
        _ = try run("batch: {size: 100, max: 100}\nthrottle: {when_blocking: false, max_wal_mb_per_second: 100}", session: budget)
        #expect(budget.calls.filter { $0 == "readHealth" }.count >= 30 && budget.slowReads == 1)
        #expect(writtenOnce(budget))
    }

    @Test("on_error stop: the bad-key search runs in one transaction that is rolled back, and the job fails naming the key")
    func badKeySearch() throws {
        let session = ScriptedSession(keys: Array(1...300))
        session.bad = [157]
        let run = try run("batch: {size: 100, max: 100}", session: session)
        guard case .failed(let failure) = run.result else { Issue.record("expected a failure, got \(run.result)"); return }
        #expect(failure.key == ["157"] && failure.range == 0 && failure.afterKey == ["100"] && failure.sqlstate == "22P02")
        #expect(failure.message.contains("on_error: stop"))
        #expect(session.writes.count == 100 && session.keys.prefix(100).allSatisfy { session.writes[$0] == 1 })
        let search = session.calls.drop { $0 != "beginProbe" }
        #expect(search.contains("probe") && search.contains("undoProbe") && Array(search.suffix(2)) == ["rollback", "disconnect"])
    }

    @Test("on_error skip: the failed batch is bisected, the bad rows quarantined, every other key written once")
    func bisection() throws {
        let session = ScriptedSession(keys: Array(1...400))
        session.bad = [57, 58, 301]
        let run = try run("batch: {size: 100, max: 100, min: 1}\non_error: {action: skip, max_rows: 10}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session, except: [57, 58, 301]))
        #expect(session.quarantined == [57, 58, 301])
        #expect(run.events.of(.badRow).map { $0["key"] } == [.strings(["57"]), .strings(["58"]), .strings(["301"])])
    }

    @Test("on_error skip: one bad row more than on_error.max_rows rolls back and fails the job; that row is not recorded")
    func badRowLimit() throws {
        let session = ScriptedSession(keys: Array(1...100))
        session.bad = [10, 20]
        let run = try run("batch: {size: 100, min: 1}\non_error: {action: skip, max_rows: 1}", session: session)
        guard case .failed(let failure) = run.result else { Issue.record("expected a failure, got \(run.result)"); return }
        #expect(failure.message.contains("more than on_error.max_rows (1) bad rows") && failure.key == ["20"])
        #expect(session.quarantined == [10])
        #expect(session.writes[20] == nil && session.writes[21] == nil && session.writes[9] == 1)
    }

    @Test("tune --workers below this worker's number: it rolls back its claim and ends, with a tune event saying so")
    func retires() throws {
        let session = ScriptedSession(keys: Array(1...100))
        session.tuning = Tuning(workers: 1)
        let run = try run(session: session, index: 1)
        guard case .done = run.result else { Issue.record("expected the worker to end, got \(run.result)"); return }
        #expect(session.writes.isEmpty)
        #expect(run.events.of(.tune).first?["stopping"] == .bool(true))
        #expect(Array(session.calls.suffix(3)) == ["claim", "rollback", "disconnect"])
        let kept = try self.run(session: { let s = ScriptedSession(keys: Array(1...100)); s.tuning = Tuning(workers: 1); return s }(), index: 0)
        #expect(writtenOnce(kept.session))
    }

    @Test("a walk that would not move (the upper key is the checkpoint): rolled back, the job fails")
    func stuckWalk() throws {
        let session = StuckSession(keys: Array(1...100))
        let run = try run(session: session)
        guard case .failed(let failure) = run.result else { Issue.record("expected a failure, got \(run.result)"); return }
        #expect(failure.message.contains("the walk would not move"))
        #expect(session.writes.isEmpty && session.calls.contains("rollback"))
    }

    @Test("the watchdog cancelled a batch: halved, every worker rests, no retry counted, every key once")
    func watchdogCancel() throws {
        let session = ScriptedSession(keys: Array(1...4000))
        let cancel = PostgresError(code: .queryCanceled, message: "canceling statement due to user request")
        session.fail = { name, _ in name == "write" && session.calls.filter({ $0 == "write" }).count == 1 ? (cancel, .milliseconds(85)) : nil }
        let run = try run("batch: {size: 2000, max: 2000, target_ms: 50}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session))
        #expect(run.events.of(.retry).isEmpty)
        let throttle = run.events.of(.throttle).first
        #expect(throttle?["watchdog"] == .bool(true) && throttle?["longest_wait_ms"] == .double(85) && throttle?["batch_size"] == .int(1000))
        #expect(run.events.of(.batch).first?["batch_size"] == .int(1000))
    }

    @Test("a lock timeout is retried from the checkpoint: attempt 2 commits, every key once")
    func retries() throws {
        let session = ScriptedSession(keys: Array(1...300))
        let lock = PostgresError(code: .lockNotAvailable, message: "canceling statement due to lock timeout")
        session.fail = { name, _ in name == "write" && session.writes.isEmpty && session.calls.filter({ $0 == "write" }).count == 1 ? (lock, nil) : nil }
        let run = try run("batch: {size: 100, max: 100}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session))
        #expect(run.events.of(.retry).first?["reason"] == .string("lock_timeout"))
        #expect(run.events.of(.batch).first?["attempt"] == .int(2))
    }

    @Test("a lost connection reconnects and goes on from the checkpoint; reconnecting that keeps failing gives up after reconnect_timeout_ms")
    func reconnects() throws {
        let lost = PostgresError(code: .connectionFailure, message: "server closed the connection unexpectedly")
        let session = ScriptedSession(keys: Array(1...300))
        session.fail = { name, _ in name == "write" && session.writes.count == 100 && session.connects == 1 ? (lost, nil) : nil }
        let run = try run("batch: {size: 100, max: 100}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session) && session.connects == 2)

        let down = ScriptedSession(keys: Array(1...300))
        let refused = PostgresError(code: .sqlclientUnableToEstablishSqlconnection, message: "connection refused")
        down.fail = { name, _ in
            if name == "write", down.writes.count == 100 { return (lost, nil) }
            return name == "connect" && down.connects >= 1 ? (refused, nil) : nil
        }
        let gone = try self.run("batch: {size: 100, max: 100}\nretry: {reconnect_timeout_ms: 3000, max_attempts: 100}", session: down)
        guard case .failed(let failure) = gone.result else { Issue.record("expected a failure, got \(gone.result)"); return }
        #expect(failure.message.contains("could not reconnect within 3000 ms") && failure.range == 0 && failure.afterKey == ["100"])
        #expect(down.writes.count == 100)
        #expect(gone.clock.elapsedTime >= .seconds(3))
    }

    @Test("no connection slot and no other worker: wait (said once), then fail after reconnect_timeout_ms")
    func slotWait() throws {
        let session = ScriptedSession(keys: Array(1...10))
        session.fail = { name, _ in name == "connect" ? (PostgresError(code: .tooManyConnections, message: "too many connections for role"), nil) : nil }
        let run = try run("retry: {reconnect_timeout_ms: 2500}", session: session)
        guard case .failed(let failure) = run.result else { Issue.record("expected a failure, got \(run.result)"); return }
        #expect(failure.message.contains("worker 0 could not connect: too many connections"))
        #expect(run.events.of(.connections).map { $0["state"] } == [.string("waiting")])
        #expect(run.clock.slept.filter { $0 == .seconds(1) }.count == 3)
    }

    @Test("a lost lease stops the worker at its next decision; a claim that finds it lost fails without writing")
    func lostLease() throws {
        let session = ScriptedSession(keys: Array(1...1000))
        var context: RunContext?
        session.before = { name, _ in if name == "write", session.writes.count == 100 { context?.leaseWatch.markLost("taken over") } }
        let run = try run("batch: {size: 100, max: 100}", session: session, setUp: { context = $0 })
        guard case .stopped(.signal) = run.result else { Issue.record("expected a stop, got \(run.result)"); return }
        #expect(session.writes.count == 200)
        let taken = LeaseTakenSession(keys: Array(1...1000))
        let lost = try self.run("batch: {size: 100, max: 100}", session: taken)
        guard case .failed(let failure) = lost.result else { Issue.record("expected a failure, got \(lost.result)"); return }
        #expect(failure.message.contains("lease lost: taken over") && taken.writes.count == 100)
        #expect(Array(taken.calls.suffix(3)) == ["claim", "rollback", "disconnect"])
    }

    @Test("the time box stops the worker between batches")
    func timeBox() throws {
        let session = ScriptedSession(keys: Array(1...10000))
        let run = try run("batch: {size: 100, max: 100, pause_ms: 1000}", session: session, maxRuntime: 3.5)
        guard case .stopped(.timeBox) = run.result else { Issue.record("expected the time box, got \(run.result)"); return }
        #expect(session.writes.count == 400 && session.writes.values.allSatisfy { $0 == 1 })
    }

    @Test("max_rows_per_second: the budget's wait is a rest with a throttle event")
    func rate() throws {
        let session = ScriptedSession(keys: Array(1...300))
        let run = try run("batch: {size: 100, max: 100}\nthrottle: {when_blocking: false, max_rows_per_second: 200}", session: session)
        guard case .done = run.result else { Issue.record("expected done, got \(run.result)"); return }
        #expect(writtenOnce(session))
        #expect(run.events.of(.throttle).allSatisfy { $0["reason"] == .string("max_rows_per_second") && $0["wait_ms"] == .double(500) })
        #expect(run.clock.slept.filter { $0 == .milliseconds(500) }.count == 3)
    }
}

/// A session whose second claim finds the lease taken by another runner.
final class LeaseTakenSession: ScriptedSession, @unchecked Sendable {
    override func claim(preferring range: Int?) throws -> RangeClaim? {
        let claim = try super.claim(preferring: range)
        if !writes.isEmpty { throw LeaseLost(reason: "taken over") }
        return claim
    }
}

/// A session whose upper key is always the range's checkpoint (a key whose text form does not
/// read back as the same value).
final class StuckSession: ScriptedSession, @unchecked Sendable {
    override func upperKey(_ claim: RangeClaim, size: Int, bySpan: Bool) throws -> UpperKey? {
        _ = try super.upperKey(claim, size: size, bySpan: bySpan)
        return UpperKey(key: claim.lower ?? ["0"], walked: 1, bound: .counted)
    }
}
