import Foundation

/// The text `backfill plan` prints.
public enum PlanReport {
    /// `requirement`: what `requires` says now (nil when the job has none).
    /// `budget`: the connection slots free now (nil: not read).
    public static func render(_ plan: JobPlan, explain: String?, requirement: (met: Bool, detail: String)? = nil,
                              budget: ConnectionBudget? = nil, workers: Int? = nil) -> String {
        let spec = plan.spec
        var lines = [
            "job:        \(spec.name) (\(spec.file))",
            "table:      \(plan.statements.table), key (\(spec.key.joined(separator: ", "))) by unique index \(plan.keyIndex)",
            "action:     \(spec.action.name)" + (spec.whereClause.map { " where \($0)" } ?? ""),
            "batches:    first \(spec.batch.size) keys, then sized for \(spec.batch.targetMs) ms each (\(spec.batch.min)…\(spec.batch.max)); lock_timeout \(spec.timeouts.lockMs) ms, statement_timeout \(spec.timeouts.statementMs) ms",
        ]
        if let rows = plan.estimatedRows {
            let batches = (rows + Int64(spec.batch.size) - 1) / Int64(max(spec.batch.size, 1))
            lines.append("estimate:   ~\(rows) rows by statistics; ≤ \(batches) batches at the first size, fewer as batches grow toward \(spec.batch.targetMs) ms")
        } else {
            lines.append("estimate:   the table has no statistics yet (run ANALYZE for an estimate)")
        }
        lines.append("plan guard: \(plan.guardFinding)")
        let workers = workers ?? spec.workers
        let watchdog = spec.throttle.whenBlocking
        let needed = ConnectionBudget.needed(workers: workers, lease: true, watchdog: watchdog)
        var connections = "connections: \(needed) = \(workers) worker\(workers == 1 ? "" : "s") + the coordinator + the lease\(watchdog ? " + the watchdog" : "") (the end check borrows the coordinator's)"
        if let budget, let free = budget.free {
            // The plan's own connection stands for the run's coordinator: `free` is what is left.
            let fit = budget.fit(workers: workers, watchdog: watchdog, lease: true)
            connections += fit == .all ? "; \(free + 1) free now" : "; now \(budget.message(fit, workers: workers, lease: true, watchdog: watchdog))"
        }
        lines.append(connections)
        if let requires = spec.requires {
            lines.append("requires:   \(requires)" + (requirement.map { $0.met ? " (holds now)" : " (does not hold now: \($0.detail); `run` exits 2 unless --wait-for-requirements)" } ?? ""))
        }
        if !spec.finalize.isEmpty {
            lines += ["", "finalize, once the job is done and no row matches `where`; each step its own transaction with lock_timeout \(spec.timeouts.lockMs) ms, retried up to \(spec.retry.maxAttempts) attempts:"]
            lines += spec.finalize.enumerated().map { "  \($0.offset + 1). \($0.element)" }
        }
        lines += ["", "batch transaction settings:", "  " + (["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(spec.timeouts.statementMs)ms'"] + plan.batchSettings).map { "SET LOCAL \($0);" }.joined(separator: " ")]
        lines += ["", "upper key of the next batch:", "  " + plan.statements.upperBound, "", "batch statement:", "  " + plan.statements.batch, ""]
        lines.append("EXPLAIN of the first batch:")
        lines.append(explain.map { $0.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") } ?? "  (the table is empty: nothing to do)")
        return lines.joined(separator: "\n")
    }
}
