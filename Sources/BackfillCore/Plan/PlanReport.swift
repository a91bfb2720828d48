import Foundation

/// The text `backfill plan` prints.
public enum PlanReport {
    /// `requirement`: what `requires` says now (nil when the job has none).
    /// `budget`: the connection slots free now (nil: not read).
    /// `cdc`: what the job's `cdc` check says now (`ChangeCapture.notes`; nil: not read).
    public static func render(_ plan: JobPlan, explain: String?, requirement: (met: Bool, detail: String)? = nil,
                              budget: ConnectionBudget? = nil, workers: Int? = nil, cdc: [String]? = nil) -> String {
        let spec = plan.spec
        let physical = spec.walk == .physical
        var lines = [
            "job:        \(spec.name) (\(spec.file))",
            physical ? "table:      \(plan.statements.table), walked in heap page order (walk: physical; ~\(plan.pages) pages now), batches `ctid > '(p,0)' AND ctid <= '(p+k,0)'`"
                : "table:      \(plan.statements.table), key (\(spec.key.joined(separator: ", "))) by unique index \(plan.keyIndex)",
            "action:     \(spec.action.name)" + (spec.whereClause.map { " where \($0)" } ?? ""),
            "batches:    first \(spec.batch.size) \(physical ? "pages" : "keys"), then sized for \(spec.batch.targetMs) ms each (\(spec.batch.min)…\(spec.batch.max)); lock_timeout \(spec.timeouts.lockMs) ms, statement_timeout \(spec.timeouts.statementMs) ms",
        ]
        if physical {
            lines.append("estimate:   ~\(plan.pages) pages, \(plan.estimatedRows.map { "~\($0) rows by statistics" } ?? "no statistics"); every page is read once a pass, and once more by the end check")
            if spec.action.name == "update" {
                lines.append("rule:       `set` must make `where` false for every row it changes; a batch whose rows still match afterwards rolls back and stops the job (docs/physical-walk.md)")
            }
        } else if let rows = plan.estimatedRows {
            let batches = (rows + Int64(spec.batch.size) - 1) / Int64(max(spec.batch.size, 1))
            lines.append("estimate:   ~\(rows) rows by statistics; ≤ \(batches) batches at the first size, fewer as batches grow toward \(spec.batch.targetMs) ms")
        } else {
            lines.append("estimate:   the table has no statistics yet (run ANALYZE for an estimate)")
        }
        lines.append("plan guard: \(plan.guardFinding)")
        if spec.journal {
            lines.append("journal:    on: each batch also writes each changed row's key, " + (spec.action.name == "delete" ? "the whole deleted row" : "the old and new values of its `set` columns")
                + " into the store's journal table, in the batch statement itself; `backfill revert \(spec.file)` puts them back (docs/journal.md)")
        }
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
        lines += cdcLines(spec, now: cdc)
        if !spec.finalize.isEmpty {
            lines += ["", "finalize, once the job is done and no row matches `where`; each step its own transaction with lock_timeout \(spec.timeouts.lockMs) ms, retried up to \(spec.retry.maxAttempts) attempts:"]
            lines += spec.finalize.enumerated().map { "  \($0.offset + 1). \($0.element)" }
        }
        lines += ["", "batch transaction settings:", "  " + (["lock_timeout = '\(spec.timeouts.lockMs)ms'", "statement_timeout = '\(spec.timeouts.statementMs)ms'"] + plan.batchSettings).map { "SET LOCAL \($0);" }.joined(separator: " ")]
        lines += ["", "upper key of the next batch:", "  " + (physical ? "by arithmetic: the checkpoint's page + the batch's pages, at most the range's last page (no query)" : plan.statements.upperBound.text)]
        if !physical, let span = plan.statements.spanBound {
            lines += ["  or, while the key is dense (at least \(KeyDensity.denseEnough) keys an integer; counted again every \(KeyDensity.recountEvery) batches), by span:", "  " + span.text]
        }
        lines += ["", "batch statement:", "  " + plan.statements.batch.text, ""]
        lines.append("EXPLAIN of the first batch:")
        lines.append(explain.map { $0.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") } ?? "  (the table is empty: nothing to do)")
        return lines.joined(separator: "\n")
    }

    /// What the batches emit for change-data-capture consumers (`cdc`), and what the server says
    /// to it now.
    static func cdcLines(_ spec: JobSpec, now: [String]?) -> [String] {
        var lines: [String] = []
        if let origin = spec.cdc.origin {
            lines.append("every batch session is set up with replication origin `\(origin)` (pg_replication_origin_session_setup; created if missing; a second session at once takes `\(ChangeCapture.originName(origin, session: 2))`, …): the batches' changes carry it")
        }
        if spec.cdc.messages {
            let example = ChangeCapture.content(job: spec.name, run: "<run id>", worker: "<host:pid:wN>", range: 0, lower: ["<last key>"], upper: ["<upper key>"], keys: spec.batch.size)
            lines.append("each batch transaction first emits \(ChangeCapture.messageSQL), $1 = \(example)")
        }
        lines += (now ?? []).map { "now: \($0)" }
        return lines.enumerated().map { ($0.offset == 0 ? "cdc:        " : "            ") + $0.element }
    }
}
