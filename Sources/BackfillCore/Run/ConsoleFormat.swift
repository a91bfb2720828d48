import Foundation

/// Text lines for people, made from run events. Pure, so that the CLI only prints.
public enum ConsoleFormat {
    /// A line for the event, or nil for events that only the progress line shows.
    public static func line(_ event: RunEvent) -> String? {
        // `job [shard-a]` for a target of a fleet run.
        let subject = event.target.map { "\(event.job) [\($0)]" } ?? event.job
        switch event.body {
        case .start(let e):
            return "\(subject): started on \(e.table) (\(e.action), ~\(e.rowsEstimate.map(String.init) ?? "?") rows by statistics, key index \(e.keyIndex))"
        case .batch, .revertBatch:
            return nil
        case .retry(let e):
            return "\(subject): retrying (\(e.reason.rawValue)) attempt \(e.attempt) in \(whole(e.delay)) ms: \(e.message ?? "?")"
        case .throttle(let e):
            switch e.cause {
            case .rowBudget: return nil  // every batch: the progress line shows the rate
            case .watchdog(let longest, let rest, let next):
                return "\(subject): cancelled a batch: a live session had waited \(ms(longest)) ms on its locks; batch now \(next) keys, resting \(ms(rest)) ms"
            case .waiting(let reason, let detail), .revert(let reason, let detail):
                return "\(subject): throttled (\(reason.rawValue)): \(detail); waiting"
            case .resumed(let reason, let waited): return "\(subject): resumed after \(ms(waited)) ms throttled (\(reason.rawValue))"
            case .blocking(let waiters, _, let rest, let next):
                return "\(subject): throttled (blocking): \(waiters) sessions waited on the last batch; batch now \(next) keys, resting \(ms(rest)) ms"
            }
        case .pass(let e):
            return "\(subject): \(e.reason)"
        case .badRow(let e):
            return "\(subject): bad row (\(e.key.joined(separator: ", "))) quarantined (\(e.badRows) so far): SQLSTATE \(e.sqlstate) \(e.message)"
        case .stop(let e):
            return "\(subject): stopped (\(e.reason.rawValue))\(e.message.map { ": \($0)" } ?? "")"
        case .done(let e):
            if e.summary.state == .done, e.summary.badRows > 0 { return "\(subject): done with \(e.summary.badRows) bad rows" }
            return "\(subject): done"
        case .error(let e):
            return "backfill: \(subject) failed: \(e.message)"
        case .requirements(let e):
            switch e.state {
            case .met(let waited): return "\(subject): requirement met after \(String(format: "%.1f", waited.milliseconds / 1000)) s: \(e.requires)"
            case .waiting(let detail, _): return "\(subject): waiting for the requirement (\(detail)): \(e.requires)"
            }
        case .finalize(let e):
            switch e.state {
            case .done(let attempts, let took): return "\(subject): finalize step \(e.step) of \(e.steps) done in \(ms(took)) ms (\(attempts) attempts)"
            case .skipped: return "\(subject): finalize step \(e.step) of \(e.steps) was done by an earlier run: \(e.statement)"
            case .started: return "\(subject): finalize step \(e.step) of \(e.steps): \(e.statement)"
            }
        case .tune(let e):
            if e.reset { return "\(subject): worker \(e.worker): tuning reset to the job file's values" }
            return "\(subject): worker \(e.worker): tuned by \(e.by ?? "?"): max_rows_per_second=\(e.maxRowsPerSecond) target_ms=\(whole(e.target)) pause_ms=\(whole(e.pause))"
                + (e.stopping ? "; it stops (workers=\(e.workers.map(String.init) ?? "?"))" : "")
        case .wait(let e):
            // `gate is not registered yet (…)` names the job itself.
            if case .notRegistered = e.reading { return e.line }
            return "\(subject): \(e.line)"
        case .connections(let e):
            return "\(subject): connections: \(e.message)"
        case .cdc(.warning(let message)):
            return "\(subject): warning: cdc: \(message)"
        case .cdc(.origin):
            return nil
        case .fleet(.skipped(_, let line)):
            return line
        case .fleet(.done(let e)):
            return e.line
        case .revert(.started(let dryRun, let afterSeq)):
            return "\(subject): revert started\(dryRun ? " (dry run: nothing is changed)" : "")" + (afterSeq.map { ", going on from journal seq \($0)" } ?? "")
        case .revert(.ended(let dryRun, let restored, let conflicts, _)):
            return "\(subject): revert \(dryRun ? "dry run: would restore" : "restored") \(restored) rows, \(conflicts) left (changed since the job wrote them)"
        }
    }

    /// A measured time in milliseconds, as the lines show it.
    private static func ms(_ duration: Duration) -> String { String(format: "%.1f", duration.milliseconds) }

    /// A setting or delay in whole milliseconds.
    private static func whole(_ duration: Duration) -> String {
        String(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
