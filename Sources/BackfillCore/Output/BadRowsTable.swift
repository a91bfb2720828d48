import Foundation

/// The table `backfill bad-rows` prints.
public enum BadRowsTable {
    public static func render(_ rows: [BadRow], job: String) -> String {
        guard !rows.isEmpty else { return "\(job): no bad rows" }
        let header = ["KEY", "SQLSTATE", "MESSAGE", "PASS", "RANGE", "DETECTED"]
        let lines = rows.map { row in
            ["(" + row.key.joined(separator: ", ") + ")", row.sqlstate, row.message + (row.detail.map { " (\($0))" } ?? ""),
             String(row.pass), String(row.range), row.detectedAt.map(RunEvent.timestamp) ?? "-"]
        }
        return StatusTable.columns([header] + lines) + "\n\(rows.count) bad rows"
    }
}

extension BadRowsTable {
    /// The table `backfill revert --conflicts` prints: the rows a revert left.
    public static func render(_ rows: [CheckpointStore.RevertConflict], job: String) -> String {
        guard !rows.isEmpty else { return "\(job): no conflicts" }
        let lines = rows.map { ["(" + $0.key.joined(separator: ", ") + ")", String($0.pass), $0.detectedAt.map(RunEvent.timestamp) ?? "-"] }
        return StatusTable.columns([["KEY", "PASS", "DETECTED"]] + lines) + "\n\(rows.count) rows left (changed by the application since the job wrote them)"
    }
}
