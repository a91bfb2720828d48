import Foundation
import PostgresClient

/// `backfill wait`: a deploy gate that follows a job in the store, read-only, until it is done
/// (exit 0), failed or cancelled (exit 1), or the time is up (exit 3). A job not registered yet
/// (its run has not started, or waits for its `requires`), even in a store whose schema does not
/// exist yet, is waited for like a pending one. It never takes the lease and writes nothing.
public enum JobWait {
    /// What a reading of the job means for the wait.
    public enum Verdict: Sendable, Hashable {
        case keepWaiting
        case finished(exitCode: Int32)
    }

    /// Done ends the wait with 0; failed, cancelled or reverted (or being reverted) with 1; any other state (pending, running,
    /// finalizing, paused, a runner gone) keeps waiting: another run may still finish it. No state
    /// (`nil`: the job is not registered yet) keeps waiting too: its run is about to register it.
    public static func verdict(_ state: JobState?) -> Verdict {
        switch state {
        case .done: .finished(exitCode: 0)
        case .failed, .cancelled, .reverting, .reverted: .finished(exitCode: 1)
        case .pending, .running, .paused, .finalizing, nil: .keepWaiting
        }
    }

    /// The `state` of `wait` events and the line for a job the store does not hold yet.
    static let notRegistered = "not_registered"

    /// `gate is not registered yet (no checkpoint store in schema `backfill` yet)`.
    public static func notRegisteredLine(job: String, schema: String, storeExists: Bool) -> String {
        "\(job) is not registered yet (" + (storeExists ? "no job of that name in schema `\(schema)`" : "no checkpoint store in schema `\(schema)` yet") + ")"
    }

    /// The state as people read it: `running`, `stopped (no runner since …)`.
    static func stateText(_ status: JobStatus) -> String {
        status.noRunnerSince.map { "stopped (no runner since \(RunEvent.timestamp($0)))" } ?? status.state.rawValue
    }

    /// One progress line: `running 42.0% rows_done=120000 ETA ~0:42`.
    public static func line(_ status: JobStatus) -> String {
        var parts = [stateText(status)]
        if let percent = status.percentDone { parts.append(String(format: "%.1f%%", percent)) }
        parts.append("rows_done=\(status.rowsDone)")
        if let eta = status.etaSeconds, status.state == .running { parts.append("ETA ~\(ProgressTracker.clock(eta))") }
        if let reason = status.throttleReason { parts.append("throttled: \(reason)") }
        if let error = status.lastError, status.state == .failed { parts.append("last error: \(error)") }
        return parts.joined(separator: " ")
    }

    /// What a `wait` event says of a reading.
    static func reading(_ status: JobStatus) -> RunEvent.Wait.Reading {
        .job(state: status.state, rowsDone: status.rowsDone, percentDone: status.percentDone, eta: status.etaSeconds.map { .seconds($0) },
             noRunnerSince: status.noRunnerSince)
    }

    /// The outcome of a wait, with the exit code and a line for people.
    public struct Outcome: Sendable, Hashable {
        public var exitCode: Int32
        public var message: String
        public var next: String
    }

    /// Follows the job: reads it every `poll` seconds on a read-only session, emits a `wait`
    /// event every `every` seconds (and when its state changes), and ends as `verdict` says, or
    /// with exit 3 after `timeout` seconds (or at a signal). A job the store does not hold yet is
    /// waited for, with `not_registered` events.
    public static func run(job: String, store: CheckpointStore, timeout: Double?, db: Connection, poll: Double = 1, every: Double = 5,
                           stop: StopSignal = StopSignal(), emit: (RunEvent) -> Void) throws -> Outcome {
        try db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        let began = ContinuousClock.now
        var lastShown: (state: String, at: Double)?
        while true {
            let elapsed = (ContinuousClock.now - began).seconds
            let status = try store.status(job: job, db: db).first
            let state: String, line: String, reading: RunEvent.Wait.Reading
            if let status {
                (state, line, reading) = (stateText(status), Self.line(status), Self.reading(status))
            } else {
                let storeExists = try store.storeExists(db: db)
                line = notRegisteredLine(job: job, schema: store.schema, storeExists: storeExists)
                state = notRegistered
                reading = .notRegistered(storeExists: storeExists)
            }
            var outcome: Outcome?
            switch verdict(status?.state) {
            case .finished(0):
                outcome = Outcome(exitCode: 0, message: "\(job) is done", next: "nothing: release what relies on it")
            case .finished(let code):
                let failed = status?.state == .failed
                outcome = Outcome(exitCode: code, message: "\(job) is \(status?.state.rawValue ?? state)" + (status?.lastError.map { ": \($0)" } ?? ""),
                                  next: failed ? "fix the cause, then run the job again: it resumes from its checkpoint" : "the job was cancelled: `run --restart` starts it over")
            case .keepWaiting:
                if let timeout, elapsed >= timeout {
                    outcome = status == nil
                        ? Outcome(exitCode: 3, message: "\(line) after \(Int(timeout.rounded())) s",
                                  next: "check that the run started (its pod, its `requires` with --wait-for-requirements) and that --schema names its store; `backfill status` lists the jobs registered")
                        : Outcome(exitCode: 3, message: "\(job) is still \(state) after \(Int(timeout.rounded())) s (\(line))",
                                  next: "wait again, or check the runner with `backfill status \(job)`")
                } else if stop.isRequested {
                    outcome = Outcome(exitCode: 3, message: "stopped waiting for \(job) (\(line))", next: "wait again: the job itself was not touched")
                }
            }
            if let outcome {
                emit(RunEvent(.wait(.init(reading: reading, line: line, waited: .seconds(elapsed), end: .init(exitCode: outcome.exitCode, next: outcome.next))), job: job))
                return outcome
            }
            if lastShown?.state != state || elapsed - (lastShown?.at ?? -every) >= every {
                emit(RunEvent(.wait(.init(reading: reading, line: line, waited: .seconds(elapsed))), job: job))
                lastShown = (state, elapsed)
            }
            nap(poll: poll, timeout: timeout, elapsed: elapsed, stop: stop)
        }
    }

    /// Sleeps until the next reading (`poll` seconds, less when the timeout comes first), in
    /// short slices so that a signal ends the wait at once.
    static func nap(poll: Double, timeout: Double?, elapsed: Double, stop: StopSignal) {
        let nap = min(poll, timeout.map { max($0 - elapsed, 0.05) } ?? poll)
        var left = Int(nap * 1000)
        while left > 0 && !stop.isRequested {
            usleep(useconds_t(min(left, 50) * 1000))
            left -= 50
        }
    }
}
