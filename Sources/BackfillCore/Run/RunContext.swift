import Foundation
import PostgresClient
import Synchronization

/// How one worker ended.
enum WorkerResult: Sendable {
    /// No range is left open.
    case done
    case stopped(StopReason)
    case failed(RunFailure)
    case held(LeaseHolder)
}

/// What the workers of one run share: the job, the store, the stop signal, the lease, one
/// serialized event stream, and the merged counters.
///
/// State sits behind a `Mutex` that is never held across network I/O or the caller's callback;
/// renewing the lease takes a lock of its own.
final class RunContext: Sendable {
    let spec: JobSpec
    let options: RunOptions
    let stop: StopSignal
    /// Where the checkpoint lives: the PostgreSQL store, or memory for a dry run.
    let store: any RunStore
    /// Cancels a batch that makes live traffic wait longer than `throttle.blocking_wait_ms`
    /// (with `throttle.when_blocking`).
    let watchdog: Watchdog?
    let runnerName = "\(ProcessInfo.processInfo.hostName):\(getpid())"
    /// This run's identity, in the `start` event and in every `cdc.messages` message.
    let runID = UUID().uuidString.lowercased()
    let started = ContinuousClock.now
    /// The caller's event callback, called from the worker threads as events happen, under no
    /// lock of the run's: it must be safe to call from several threads (the CLI's console
    /// serialises its lines itself).
    private let emitter: @Sendable (RunEvent) -> Void
    private let leaseLock: Mutex<Lease?>
    /// What claims check, and why the lease was lost.
    let leaseWatch: LeaseWatch

    private struct State {
        var merged: RunSummary
        var finished: [WorkerResult] = []
        var aborted = false
        var restUntil = ContinuousClock.now
        /// Workers holding a connection now.
        var connected = 0
    }
    private let state: Mutex<State>

    init(spec: JobSpec, options: RunOptions, stop: StopSignal, emit: @escaping @Sendable (RunEvent) -> Void) {
        self.spec = spec
        self.options = options
        self.stop = stop
        self.emitter = emit
        let watch = LeaseWatch(specHash: spec.fingerprint)
        self.leaseWatch = watch
        if options.dryRun {
            self.store = MemoryStore(rowsPerSecond: spec.throttle.maxRowsPerSecond)
        } else {
            var store = options.store
            store.leaseWatch = watch
            self.store = store
        }
        self.watchdog = spec.throttle.whenBlocking
            ? Watchdog(conninfo: options.database, applicationName: "backfill:\(spec.name):watchdog",
                       limitMs: Double(spec.throttle.blockingWaitMs ?? spec.batch.targetMs))
            : nil
        self.state = Mutex(State(merged: RunSummary(job: spec.name, state: .running)))
        self.leaseLock = Mutex(nil)
    }

    var applicationName: String { "backfill:\(spec.name)" }

    var elapsed: Double { (ContinuousClock.now - started).seconds }

    /// Hands an event of this job to the caller's callback.
    func emit(_ body: RunEvent.Body) {
        emitter(RunEvent(body, job: spec.name))
    }

    /// Whether the workers should stop now: a signal, or another worker failed.
    var shouldStop: Bool { stop.isRequested || leaseWatch.lostReason != nil || state.withLock { $0.aborted } }

    func abort() { state.withLock { $0.aborted = true } }

    /// Sleeps in short slices so that a stop request is honoured quickly.
    func sleep(ms: Int) {
        var left = ms
        while left > 0 && !shouldStop {
            let slice = min(left, 50)
            usleep(useconds_t(slice * 1000))
            left -= slice
        }
    }

    func record(_ result: WorkerResult) { state.withLock { $0.finished.append(result) } }

    /// A worker got (`true`) or gave up (`false`) its connection.
    func workerConnection(_ open: Bool) { state.withLock { $0.connected += open ? 1 : -1 } }

    /// Whether another worker holds a connection, or one finished with no range left: a worker
    /// that finds no free connection slot then waits for one instead of failing the job (or,
    /// with nothing left, ends).
    var slotWait: (othersConnected: Bool, walkDone: Bool) {
        state.withLock { state in
            (state.connected > 0, state.finished.contains { if case .done = $0 { true } else { false } })
        }
    }

    /// The workers' results so far, and forgets them (for the next pass).
    func takeResults() -> [WorkerResult] {
        state.withLock { state in
            defer { state.finished = [] }
            return state.finished
        }
    }

    /// Records the rows the job had done before this run, read from the checkpoint store.
    func setRowsBefore(_ rows: Int64) { state.withLock { $0.merged.rowsBefore = rows } }

    /// Adds a committed batch to the run's counters; returns the rows done so far in this run
    /// and the job's total (before this run plus this run).
    func addBatch(rows: Int64, ms: Double, lastKey: [String]) -> (run: Int64, job: Int64) {
        state.withLock {
            $0.merged.rows += rows
            $0.merged.batches += 1
            $0.merged.batchMs.append(ms)
            $0.merged.lastKey = lastKey
            return ($0.merged.rows, $0.merged.rowsDone)
        }
    }

    /// A bad row was quarantined.
    func addBadRow() { state.withLock { $0.merged.runBadRows += 1 } }

    func addRetry(_ reason: RetryReason) { state.withLock { $0.merged.retries[reason, default: 0] += 1 } }

    func addThrottle(_ reason: ThrottleReason, for wait: Duration) { state.withLock { $0.merged.throttledSeconds[reason.rawValue, default: 0] += wait.seconds } }

    /// The run's summary so far, in `state`.
    func summary(state runState: JobState) -> RunSummary {
        let seconds = elapsed
        return state.withLock {
            var s = $0.merged
            s.state = runState
            s.seconds = seconds
            return s
        }
    }

    /// Live traffic waited on one worker: every worker of this process rests until `until`.
    func restAll(until: ContinuousClock.Instant) { state.withLock { $0.restUntil = max($0.restUntil, until) } }

    /// How long this worker should still rest because another one was told to.
    var sharedRest: Duration { state.withLock { $0.restUntil } - ContinuousClock.now }

    /// Whether this process holds the job's lease (taken and not lost).
    var holdsLease: Bool { leaseWatch.lostReason == nil && leaseLock.withLock { $0 != nil } }

    /// Takes the job's lease for this process and starts its heartbeat; returns the holder when
    /// another runner has it.
    func acquireLease() throws -> LeaseHolder? {
        let taken = try leaseLock.withLock { lease -> LeaseHolder? in
            switch try Lease.acquire(job: spec.name, runner: runnerName, conninfo: options.database, store: options.store) {
            case .success(let new):
                lease = new
                leaseWatch.hold(token: new.token)
                return nil
            case .failure(let holder):
                return holder
            }
        }
        if taken == nil { startHeartbeat() }
        return taken
    }

    /// One heartbeat (a worker that reconnected checks at once); a lost lease is recorded and
    /// stops every worker (`shouldStop`). Serialised by the lease's own lock.
    func checkLease() {
        leaseLock.withLock { lease in
            guard let current = lease, leaseWatch.lostReason == nil else { return }
            if case .lost(let reason) = current.renew() { leaseWatch.markLost(reason) }
        }
    }

    /// Heartbeats every `Lease.heartbeatSeconds` on a thread of its own until the lease is
    /// released or lost.
    private func startHeartbeat() {
        let thread = Thread { [self] in
            while true {
                for _ in 0..<Int(Lease.heartbeatSeconds * 10) {
                    Thread.sleep(forTimeInterval: 0.1)
                    if leaseLock.withLock({ $0 == nil }) { return }
                }
                checkLease()
                if leaseWatch.lostReason != nil { return }
            }
        }
        thread.start()
    }

    /// Gives the lease up at the end of the run (the row is removed, the session closed).
    func releaseLease() {
        leaseLock.withLock { lease in
            lease?.release()
            lease = nil
        }
    }
}
