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
        switch event.kind {
        case .start:
            return "\(event.job): started on \(text("table")) (\(text("action")), ~\(text("rows_estimate")) rows by statistics, key index \(text("key_index")))"
        case .batch:
            return nil
        case .retry:
            return "\(event.job): retrying (\(text("reason"))) attempt \(text("attempt")) in \(text("delay_ms")) ms: \(text("message"))"
        case .throttle:
            switch (event["reason"], event["state"]) {
            case (.string("max_rows_per_second"), _): return nil  // every batch: the progress line shows the rate
            case _ where event["watchdog"] == .bool(true):
                return "\(event.job): cancelled a batch: a live session had waited \(text("longest_wait_ms")) ms on its locks; batch now \(text("batch_size")) keys, resting \(text("wait_ms")) ms"
            case (_, .string("waiting")): return "\(event.job): throttled (\(text("reason"))): \(text("detail")); waiting"
            case (_, .string("resumed")): return "\(event.job): resumed after \(text("wait_ms")) ms throttled (\(text("reason")))"
            default: return "\(event.job): throttled (\(text("reason"))): \(text("waiters")) sessions waited on the last batch; batch now \(text("batch_size")) keys, resting \(text("wait_ms")) ms"
            }
        case .pass:
            return "\(event.job): \(text("reason"))"
        case .badRow:
            return "\(event.job): bad row \(text("key")) quarantined (\(text("bad_rows")) so far): SQLSTATE \(text("sqlstate")) \(text("message"))"
        case .stop:
            let message = event["message"] == nil ? "" : ": \(text("message"))"
            return "\(event.job): stopped (\(text("reason")))\(message)"
        case .done:
            if case .int(let bad) = event["bad_rows"], bad > 0 { return "\(event.job): done with \(bad) bad rows" }
            return "\(event.job): done"
        case .error:
            return "backfill: \(event.job) failed: \(text("message"))"
        case .requirements:
            if event["state"] == .string("met") {
                let waitedMs: Double = if case .double(let ms) = event["waited_ms"] { ms } else { 0 }
                return "\(event.job): requirement met after \(String(format: "%.1f", waitedMs / 1000)) s: \(text("requires"))"
            }
            return "\(event.job): waiting for the requirement (\(text("detail"))): \(text("requires"))"
        case .finalize:
            switch event["state"] {
            case .string("done"): return "\(event.job): finalize step \(text("step")) of \(text("steps")) done in \(text("duration_ms")) ms (\(text("attempts")) attempts)"
            case .string("skipped"): return "\(event.job): finalize step \(text("step")) of \(text("steps")) was done by an earlier run: \(text("statement"))"
            default: return "\(event.job): finalize step \(text("step")) of \(text("steps")): \(text("statement"))"
            }
        case .tune:
            if event["reset"] == .bool(true) { return "\(event.job): worker \(text("worker")): tuning reset to the job file's values" }
            return "\(event.job): worker \(text("worker")): tuned by \(text("by")): max_rows_per_second=\(text("max_rows_per_second")) target_ms=\(text("target_ms")) pause_ms=\(text("pause_ms"))"
                + (event["stopping"] == .bool(true) ? "; it stops (workers=\(text("workers")))" : "")
        case .wait:
            // `gate is not registered yet (…)` names the job itself.
            return event["state"] == .string(JobWait.notRegistered) ? text("line") : "\(event.job): \(text("line"))"
        case .connections:
            return "\(event.job): connections: \(text("message"))"
        case .cdc:
            return event["state"] == .string("warning") ? "\(event.job): warning: cdc: \(text("message"))" : nil
        }
    }
}
