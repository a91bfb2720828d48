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
