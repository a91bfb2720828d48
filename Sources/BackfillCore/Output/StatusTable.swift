import Foundation

/// The table `backfill status` prints.
public enum StatusTable {
    public static func render(_ jobs: [JobStatus]) -> String {
        guard !jobs.isEmpty else { return "no jobs in the checkpoint store" }
        let header = ["JOB", "STATE", "ROWS", "BATCHES", "LAST KEY", "UPDATED", "NOTE"]
        let rows = jobs.map { job -> [String] in
            var note = job.lastError ?? ""
            if let reason = job.throttleReason {
                note = "throttled: \(reason)" + (job.throttledSince.map { " since \(RunEvent.timestamp($0))" } ?? "") + (job.throttleDetail.map { " (\($0))" } ?? "")
            }
            if let by = job.pausedBy, job.state == .paused || job.state == .cancelled {
                note = "\(job.state.rawValue) by \(by)" + (job.pausedAt.map { " at \(RunEvent.timestamp($0))" } ?? "")
            }
            if let eta = job.etaSeconds, job.state == .running {
                note += (note.isEmpty ? "" : "; ") + "ETA ~\(ProgressTracker.clock(eta)) by the ranges' \(job.walk == "physical" ? "heap pages left" : "row estimates")"
                    + ((job.runThrottledSeconds ?? 0) >= 1 ? ", throttled \(ProgressTracker.clock(job.runThrottledSeconds ?? 0)) not counted" : "")
            }
            if job.badRows > 0 {
                note += (note.isEmpty ? "" : "; ") + "\(job.badRows) bad rows (`backfill bad-rows \(job.name)`)"
            }
            if let restored = job.revertRestored {
                note += (note.isEmpty ? "" : "; ") + "revert: \(restored) rows restored"
                    + (job.revertConflicts > 0 ? ", \(job.revertConflicts) left as the application changed them (`backfill revert JOBFILE --conflicts`)" : "")
            }
            if let tuning = job.tuning {
                note += (note.isEmpty ? "" : "; ") + "tuned: \(tuning.summary)"
            }
            let state = job.noRunnerSince.map { "stopped (no runner since \(RunEvent.timestamp($0)))" } ?? job.state.rawValue
            return [job.name, state, String(job.rowsDone), String(job.batches), lastKey(job.lastKey, walk: job.walk),
                    job.updatedAt.map(RunEvent.timestamp) ?? "-", note]
        }
        var text = columns([header] + rows)
        if jobs.count == 1, let ranges = jobs[0].rangeList, ranges.count > 1 || !(jobs[0].workers ?? []).isEmpty {
            func key(_ k: [String]?) -> String { lastKey(k, walk: jobs[0].walk) }
            text += "\n\nRANGES\n" + columns([["RANGE", "FROM (EXCL)", "TO (INCL)", "AT KEY", "ROWS", "DONE", "LAST WORKER"]] + ranges.map {
                [String($0.range), key($0.lowerKey), $0.upperKey == nil ? "(end)" : key($0.upperKey), key($0.lastKey), String($0.rowsDone), $0.done ? "yes" : "no", $0.worker ?? "-"]
            })
            if let workers = jobs[0].workers, !workers.isEmpty {
                text += "\n\nWORKERS (seen in the last 30 s)\n" + columns([["WORKER (HOST:PID:N)", "RANGE", "ROWS", "ROWS/S", "LAST SEEN"]] + workers.map {
                    [$0.worker, $0.range.map(String.init) ?? "-", String($0.rowsDone), String(format: "%.0f", $0.rowsPerSecond), $0.lastSeen.map(RunEvent.timestamp) ?? "-"]
                })
            }
        }
        return text
    }

    /// A key as the table shows it: `(a, b)`; a physical walk's ctid `(p,0)` as `page p` (a
    /// checkpoint inside a page, after a quarantined row, as its ctid).
    static func lastKey(_ key: [String]?, walk: String) -> String {
        guard let key else { return "-" }
        if walk == "physical", let page = BatchStatements.page(of: key) { return key.first?.hasSuffix(",0)") == true ? "page \(page)" : "ctid \(key[0])" }
        return "(" + key.joined(separator: ", ") + ")"
    }

    /// Rows of cells as left-aligned columns, two spaces apart.
    static func columns(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}
