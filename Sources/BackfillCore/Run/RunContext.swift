import Foundation
import PostgresClient
import Synchronization

/// How one worker ended.
enum WorkerResult: Sendable {
    /// No range is left open.
    case done
    case stopped(StopReason)
    case failed(String)
    case held(LeaseHolder)
}

/// What the workers of one run share: the job, the stop signal, the lease, one serialized event
/// stream, and the merged counters. The lock makes it safe to share between worker threads.
final class RunContext: @unchecked Sendable {
    let spec: JobSpec
    let options: RunOptions
    let stop: StopSignal
    let runnerName = "\(ProcessInfo.processInfo.hostName):\(getpid())"
    let started = ContinuousClock.now
    private let emitter: (RunEvent) -> Void
    private let lock = NSLock()
    private var merged: RunSummary
    private var finished: [WorkerResult] = []
    private var aborted = false
    private var restUntil = ContinuousClock.now
    private var limiter: RateLimiter
    var plan: JobPlan!
    var lease: Lease?

    init(spec: JobSpec, options: RunOptions, stop: StopSignal, emit: @escaping (RunEvent) -> Void) {
        self.spec = spec
        self.options = options
        self.stop = stop
        self.emitter = emit
        self.merged = RunSummary(job: spec.name, state: .running)
        self.limiter = RateLimiter(rowsPerSecond: spec.throttle.maxRowsPerSecond)
    }

    var applicationName: String { "backfill:\(spec.name)" }

    var elapsed: Double { (ContinuousClock.now - started).seconds }

    /// Emits an event; events from several workers never interleave.
    func event(_ kind: RunEvent.Kind, _ fields: [(String, RunEvent.Value)] = []) {
        lock.withLock { emitter(RunEvent(kind, job: spec.name, fields)) }
    }

    /// Whether the workers should stop now: a signal, or another worker failed.
    var shouldStop: Bool { stop.isRequested || lock.withLock { aborted } }

    func abort() { lock.withLock { aborted = true } }

    func record(_ result: WorkerResult) { lock.withLock { finished.append(result) } }

    var results: [WorkerResult] { lock.withLock { finished } }

    /// Records the rows the job had done before this run, read from the checkpoint store.
    func setRowsBefore(_ rows: Int64) { lock.withLock { merged.rowsBefore = rows } }

    /// Adds a committed batch to the run's counters; returns the rows done so far in this run
    /// and the job's total (before this run plus this run).
    func addBatch(rows: Int64, ms: Double, lastKey: [String]) -> (run: Int64, job: Int64) {
        lock.withLock {
            merged.rows += rows
            merged.batches += 1
            merged.batchMs.append(ms)
            merged.lastKey = lastKey
            return (merged.rows, merged.rowsDone)
        }
    }

    func addRetry(_ reason: RetryReason) { lock.withLock { merged.retries[reason, default: 0] += 1 } }

    func addThrottle(_ reason: String, seconds: Double) { lock.withLock { merged.throttledSeconds[reason, default: 0] += seconds } }

    /// The run's summary so far, in `state`.
    func summary(state: JobState) -> RunSummary {
        lock.withLock {
            var s = merged
            s.state = state
            s.seconds = elapsed
            return s
        }
    }

    /// Live traffic waited on one worker: every worker of this process rests until `until`.
    func restAll(until: ContinuousClock.Instant) { lock.withLock { restUntil = max(restUntil, until) } }

    /// How long this worker should still rest because another one was told to.
    var sharedRest: Duration { lock.withLock { restUntil - ContinuousClock.now } }

    /// The in-process token bucket (dry runs, which keep nothing in the store).
    func consumeLocally(rows: Int64) -> Double {
        lock.withLock { limiter.consume(rows: Int(rows), now: elapsed) }
    }

    /// After a lost connection: the lease's connection may have died with it; take it again.
    func renewLease() throws -> LeaseHolder? {
        try lock.withLock {
            guard let lease, !lease.isHeld else { return nil }
            self.lease = nil
            switch try Lease.acquire(job: spec.name, conninfo: options.database, store: options.store) {
            case .success(let renewed):
                self.lease = renewed
                return nil
            case .failure(let holder):
                return holder
            }
        }
    }
}
