import Foundation

/// Text lines for people, made from run events. Pure, so that the CLI only prints.
public enum ConsoleFormat {
    /// A line for the event, or nil for events that only the progress line shows.
    public static func line(_ event: RunEvent) -> String? {
        func text(_ name: String) -> String {
            switch event[name] {
            case .string(let s): return s
            case .int(let i): return String(i)
            case .double(let d): return String(format: "%.1f", d)
            case .bool(let b): return String(b)
            case .strings(let list): return "(" + list.joined(separator: ", ") + ")"
            case .null, nil: return "?"
            }
        }
        // `job [shard-a]` for a target of a fleet run.
        let subject = event.target.map { "\(event.job) [\($0)]" } ?? event.job
        switch event.kind {
        case .start:
            return "\(subject): started on \(text("table")) (\(text("action")), ~\(text("rows_estimate")) rows by statistics, key index \(text("key_index")))"
        case .batch:
            return nil
        case .retry:
            return "\(subject): retrying (\(text("reason"))) attempt \(text("attempt")) in \(text("delay_ms")) ms: \(text("message"))"
        case .throttle:
            switch (event["reason"], event["state"]) {
            case (.string("max_rows_per_second"), _): return nil  // every batch: the progress line shows the rate
            case _ where event["watchdog"] == .bool(true):
                return "\(subject): cancelled a batch: a live session had waited \(text("longest_wait_ms")) ms on its locks; batch now \(text("batch_size")) keys, resting \(text("wait_ms")) ms"
            case (_, .string("waiting")): return "\(subject): throttled (\(text("reason"))): \(text("detail")); waiting"
            case (_, .string("resumed")): return "\(subject): resumed after \(text("wait_ms")) ms throttled (\(text("reason")))"
            default: return "\(subject): throttled (\(text("reason"))): \(text("waiters")) sessions waited on the last batch; batch now \(text("batch_size")) keys, resting \(text("wait_ms")) ms"
            }
        case .pass:
            return "\(subject): \(text("reason"))"
        case .badRow:
            return "\(subject): bad row \(text("key")) quarantined (\(text("bad_rows")) so far): SQLSTATE \(text("sqlstate")) \(text("message"))"
        case .stop:
            let message = event["message"] == nil ? "" : ": \(text("message"))"
            return "\(subject): stopped (\(text("reason")))\(message)"
        case .done:
            if case .int(let bad) = event["bad_rows"], bad > 0 { return "\(subject): done with \(bad) bad rows" }
            return "\(subject): done"
        case .error:
            return "backfill: \(subject) failed: \(text("message"))"
        case .requirements:
            if event["state"] == .string("met") {
                let waitedMs: Double = if case .double(let ms) = event["waited_ms"] { ms } else { 0 }
                return "\(subject): requirement met after \(String(format: "%.1f", waitedMs / 1000)) s: \(text("requires"))"
            }
            return "\(subject): waiting for the requirement (\(text("detail"))): \(text("requires"))"
        case .finalize:
            switch event["state"] {
            case .string("done"): return "\(subject): finalize step \(text("step")) of \(text("steps")) done in \(text("duration_ms")) ms (\(text("attempts")) attempts)"
            case .string("skipped"): return "\(subject): finalize step \(text("step")) of \(text("steps")) was done by an earlier run: \(text("statement"))"
            default: return "\(subject): finalize step \(text("step")) of \(text("steps")): \(text("statement"))"
            }
        case .tune:
            if event["reset"] == .bool(true) { return "\(subject): worker \(text("worker")): tuning reset to the job file's values" }
            return "\(subject): worker \(text("worker")): tuned by \(text("by")): max_rows_per_second=\(text("max_rows_per_second")) target_ms=\(text("target_ms")) pause_ms=\(text("pause_ms"))"
                + (event["stopping"] == .bool(true) ? "; it stops (workers=\(text("workers")))" : "")
        case .wait:
            // `gate is not registered yet (…)` names the job itself.
            return event["state"] == .string(JobWait.notRegistered) ? text("line") : "\(subject): \(text("line"))"
        case .connections:
            return "\(subject): connections: \(text("message"))"
        case .cdc:
            return event["state"] == .string("warning") ? "\(subject): warning: cdc: \(text("message"))" : nil
        case .fleet:
            return text("line")
        case .revert:
            if event["state"] == .string("started") { return "\(subject): revert started\(event["dry_run"] == .bool(true) ? " (dry run: nothing is changed)" : "") at journal pass \(text("pass"))" }
            return "\(subject): revert \(event["state"] == .string("dry_run") ? "dry run: would restore" : "restored") \(text("restored")) rows, \(text("conflicts")) left (changed since the job wrote them)"
        }
    }
}
