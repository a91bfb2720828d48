import Dispatch
import Foundation
import PostgresClient
import Synchronization

/// How one target of a fleet run ended.
public struct TargetResult: Sendable {
    public var target: FleetTarget
    /// The run's outcome; nil when the target was not started.
    public var outcome: RunOutcome?
    /// Why a target was not started.
    public var skipped: String?

    /// The exit code a run of this target alone would have given; nil when it was not started.
    public var exitCode: Int32? { outcome?.exitCode }

    /// `shard-a: done rows=… seconds=…` (the run's summary line, with the target), or why not.
    public var line: String {
        let name = target.name
        switch outcome {
        case .done(let s)?, .stopped(_, let s)?, .failed(_, let s)?:
            return "\(name): " + s.line.dropFirst(s.job.count + 2) + " (exit \(exitCode!))"
        case .held(let holder)?:
            return "\(name): skipped: another runner holds the job there: \(holder) (exit 4)"
        case .invalid(let error)?:
            return "\(name): invalid: " + (error.all.first.map { "\($0.problem) (fix: \($0.fix))" } ?? "\(error)") + " (exit 2)"
        case nil:
            return "\(name): not started: \(skipped ?? "the fleet stopped first")"
        }
    }

    /// `done`, `failed`, `invalid`, `stopped`, `held` or `not_started`.
    public var state: String {
        switch outcome {
        case .done?: exitCode == 0 ? "done" : "done_with_bad_rows"
        case .stopped?: "stopped"
        case .failed?: "failed"
        case .held?: "held"
        case .invalid?: "invalid"
        case nil: "not_started"
        }
    }

    /// Rows the run wrote, and the job's total there.
    var rows: (run: Int64, done: Int64)? {
        switch outcome {
        case .done(let s)?, .stopped(_, let s)?, .failed(_, let s)?: (s.rows, s.rowsDone)
        default: nil
        }
    }
}

/// How a fleet run ended: every target's result in file order, and the fleet's exit code
/// (`FleetExit`).
public struct FleetOutcome: Sendable {
    public var job: String
    public var results: [TargetResult]
    public var seconds: Double

    public var exitCode: Int32 { FleetExit.code(results.map(\.exitCode)) }

    /// The targets that did not finish (exit code not 0, or not started), in file order.
    public var unfinished: [TargetResult] { results.filter { $0.exitCode != 0 } }

    /// `total: 4 targets: 3 done, 1 invalid; rows=… seconds=…; exit 2 (shard-c: invalid)`.
    public var totalLine: String {
        var counts: [(String, Int)] = []
        for result in results {
            if let i = counts.firstIndex(where: { $0.0 == result.state }) { counts[i].1 += 1 } else { counts.append((result.state, 1)) }
        }
        let rows = results.compactMap(\.rows).reduce(Int64(0)) { $0 + $1.run }
        let failing = unfinished.map { "\($0.target.name): \($0.state.replacingOccurrences(of: "_", with: " "))" }
        return "total: \(results.count) targets: " + counts.map { "\($0.1) \($0.0.replacingOccurrences(of: "_", with: " "))" }.joined(separator: ", ")
            + String(format: "; rows=%lld seconds=%.1f; exit %d", rows, seconds, exitCode)
            + (failing.isEmpty ? "" : " (" + failing.joined(separator: ", ") + ")")
    }

    /// What to do next, for the first unfinished target.
    public var nextStep: String {
        guard let first = unfinished.first else { return "nothing: the job is done on every target" }
        let rest = "; then run the fleet again: finished targets are skipped (done) and the others resume from their checkpoints"
        guard let outcome = first.outcome else { return "run the fleet again to start the targets not started" }
        return "\(first.target.name): " + outcome.nextStep + rest
    }

    /// The `fleet` event that ends the run.
    public var event: RunEvent {
        RunEvent(.fleet(.done(.init(targets: results.map { .init(name: $0.target.name, state: $0.state, exitCode: $0.exitCode) }, seconds: .seconds(seconds),
                                    line: totalLine, exitCode: exitCode, next: nextStep))), job: job)
    }
}

/// Runs one job against every target of a targets file, each exactly as `run --database` would
/// (its own store, lease, workers and throttles, on threads of its own), as `FleetSchedule`
/// allows. A signal (the `stop` given) stops every running target after its batch in flight
/// and starts no new one; `maxRuntime` is the whole fleet's: a target started late gets what is
/// left, and none starts after it. Blocking: call it from a thread of its own.
public final class FleetRunner: Sendable {
    let spec: JobSpec
    let targets: TargetsFile
    let options: RunOptions
    let stop: StopSignal
    let emit: @Sendable (RunEvent) -> Void
    let onTargetEnd: @Sendable (TargetResult) -> Void

    /// - Parameters:
    ///   - options: every target's options; `database` is each target's own.
    ///   - emit: every target's events, with `target` set.
    ///   - onTargetEnd: each target's result as it ends (for its summary line).
    public init(spec: JobSpec, targets: TargetsFile, options: RunOptions, stop: StopSignal = StopSignal(),
                emit: @escaping @Sendable (RunEvent) -> Void = { _ in }, onTargetEnd: @escaping @Sendable (TargetResult) -> Void = { _ in }) {
        self.spec = spec
        self.targets = targets
        self.options = options
        self.stop = stop
        self.emit = emit
        self.onTargetEnd = onTargetEnd
    }

    public func run() -> FleetOutcome {
        let began = ContinuousClock.now
        var schedule = FleetSchedule(targets)
        var results = targets.targets.map { TargetResult(target: $0) }
        let ended = Mutex<[(Int, RunOutcome)]>([])
        let wake = DispatchSemaphore(value: 0)
        var haltReason: String?
        while true {
            for (index, outcome) in ended.withLock({ list in defer { list = [] }; return list }) {
                results[index].outcome = outcome
                schedule.finished(index, exitCode: outcome.exitCode)
                if schedule.halted, haltReason == nil {
                    haltReason = index == schedule.canary ? "the canary \(targets.targets[index].name) did not finish (exit \(outcome.exitCode))"
                        : "\(targets.targets[index].name) failed (exit \(outcome.exitCode)) and on_target_failure is stop"
                }
                onTargetEnd(results[index])
            }
            let elapsed = (ContinuousClock.now - began).seconds
            if !schedule.halted {
                if stop.isRequested {
                    haltReason = "stopped by a signal"
                    schedule.halt()
                } else if let limit = options.maxRuntime, elapsed >= limit {
                    haltReason = "--max-runtime passed"
                    schedule.halt()
                }
            }
            for index in schedule.startable() {
                start(index, remaining: options.maxRuntime.map { max(0, $0 - elapsed) }) { outcome in
                    ended.withLock { $0.append((index, outcome)) }
                    wake.signal()
                }
            }
            if schedule.isOver && ended.withLock({ $0.isEmpty }) { break }
            _ = wake.wait(timeout: .now() + 0.2)
        }
        for index in results.indices where results[index].outcome == nil {
            results[index].skipped = haltReason ?? (schedule.canary.map { "the canary \(targets.targets[$0].name) did not finish" } ?? "the fleet stopped first")
            let line = "\(spec.name) [\(results[index].target.name)]: not started: \(results[index].skipped!)"
            emit(withTarget(RunEvent(.fleet(.skipped(reason: results[index].skipped!, line: line)), job: spec.name), results[index].target))
        }
        return FleetOutcome(job: spec.name, results: results, seconds: (ContinuousClock.now - began).seconds)
    }

    /// Runs one target on a thread of its own; `done` gets its outcome.
    private func start(_ index: Int, remaining: Double?, done: @escaping @Sendable (RunOutcome) -> Void) {
        let target = targets.targets[index]
        var options = self.options
        options.database = target.database
        options.maxRuntime = remaining
        let (spec, stop, emit, targetOptions) = (self.spec, self.stop.child(), self.emit, options)
        let thread = Thread {
            done(Runner(spec: spec, options: targetOptions, stop: stop) { event in emit(Self.withTarget(event, target)) }.run())
        }
        thread.stackSize = 4 << 20
        thread.start()
    }

    private func withTarget(_ event: RunEvent, _ target: FleetTarget) -> RunEvent { Self.withTarget(event, target) }

    /// The event with its target, and with the target's connection string kept out of its text.
    public static func withTarget(_ event: RunEvent, _ target: FleetTarget) -> RunEvent {
        var event = event
        event.target = target.name
        let secrets = [target.database] + [ConnectionInfo.parse(target.database)["password"]].compactMap { $0 }
        event.body.redact { ConnectionInfo.redact($0, secrets: secrets) }
        return event
    }
}
