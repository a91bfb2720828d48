import BackfillCore
import Foundation

/// Everything one benchmark run measured, as JSON and as Markdown.
struct Report: Encodable, Sendable {
    var date: String
    var command: String
    var machine: [String: String]
    var main: SizeRun
    var quiet: SizeRun?
    var contention: SizeRun?
    var contentionClients: Int
    /// One UPDATE and Backfill's defaults on the table keyed by random uuids, without live traffic.
    var uuid: SizeRun?
    var rehearsal: RehearsalReport?
    var series: [SizeRun]
    var offsetLimit: Int
    var liveClients: Int
    var rounds: Int
    /// The peaks of results/memory.md, a separate run of `benchmarks/memory-rss.sh`.
    var memory: [MemoryPeak]
    /// The table of results/cost-breakdown.md, a separate run of `benchmarks/cost-breakdown.sh`:
    /// instructions a changed row by statement shape.
    var costBreakdown: [String] = []
    /// The tables of other separate runs kept in results/ (the journal's cost, a fleet), shown
    /// as they were written, each under its heading and with a link to its file.
    var separate: [Separate] = []

    struct Separate: Encodable, Sendable {
        var title: String
        var file: String
        var tables: [String]

        /// The tables of `file` in results/ (its lines that start with `|`, a blank line between
        /// two tables); nil when the file is missing or has none.
        static func read(_ title: String, file: String, in results: String) -> Separate? {
            guard let text = try? String(contentsOfFile: results + "/" + file, encoding: .utf8) else { return nil }
            var tables: [String] = [], inTable = false
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("|") {
                    if !inTable && !tables.isEmpty { tables.append("") }
                    tables.append(String(line))
                    inTable = true
                } else {
                    inTable = false
                }
            }
            return tables.isEmpty ? nil : Separate(title: title, file: file, tables: tables)
        }
    }

    enum CodingKeys: String, CodingKey { case date, command, machine, main, quiet, contention, uuid, rehearsal, series, rounds, memory, separate
        case costBreakdown = "cost_breakdown"
        case offsetLimit = "offset_limit", liveClients = "live_clients", contentionClients = "contention_clients"
    }

    var markdown: String {
        var lines = [
            "# Benchmark results",
            "",
            "Written by `backfill-bench`; never edited by hand.",
            "",
            "- date: \(date)",
            "- command: `\(command)`",
            "- machine: \(machine["cores"] ?? "?") cores, \(machine["memory"] ?? "?"), \(machine["cpu"] ?? "?")",
            "- server: \(machine["postgresql"] ?? "?")",
            "- settings: " + machine.keys.filter { $0.hasPrefix("setting.") }.sorted().map { "\($0.dropFirst(8))=\(machine[$0]!)" }.joined(separator: ", "),
            "",
        ]
        lines += targets + [""]
        if !costBreakdown.isEmpty {
            lines += ["## Where a batch's time goes", "",
                      "CPU instructions a changed row by statement shape, counted by callgrind in a single-user backend (they repeat whatever the machine's noise), from a separate run of `benchmarks/cost-breakdown.sh` ([results/cost-breakdown.md](results/cost-breakdown.md)):", ""]
                + costBreakdown + [""]
        }
        for run in separate {
            lines += ["## \(run.title)", "", "From a separate run, [results/\(run.file)](results/\(run.file)) (how it was run is written there):", ""] + run.tables + [""]
        }
        lines += ["## Charts", "", "Drawn from this run's figures (`results/*.svg`, written with this file)."]
        for chart in charts { lines += ["", "![\(chart.title)](results/\(chart.file))"] }
        lines.append("")
        lines += table(main, heading: "## \(main.rows) rows, \(String(format: "%.0f", Double(main.tableBytes) / 1_048_576)) MB, " + (liveClients > 0 ? "under live traffic" : "no live traffic"))
        if let quiet {
            lines += [""] + table(quiet, heading: "## \(quiet.rows) rows, no live traffic (raw throughput)")
        }
        if let contention {
            lines += [""] + table(contention, heading: "## \(contention.rows) rows under \(contentionClients) live clients (CPU contention)")
        }
        if let uuid {
            lines += [""] + table(uuid, heading: "## \(uuid.rows) rows keyed by random uuids, \(String(format: "%.0f", Double(uuid.tableBytes) / 1_048_576)) MB, no live traffic")
            lines += ["", "The hand-written loop does not apply here: the key ranges of uuids cannot be computed by addition."]
        }
        if let rehearsal {
            lines += ["", "## Rehearsal: \(rehearsal.rows) rows under `backfill rehearse`'s default traffic", "",
                      "Backfill's defaults rehearsed as `backfill rehearse` does it (\(rehearsal.clients) clients locking random rows flat out, which saturates \(machine["cores"] ?? "?") cores); its report:", "",
                      "```", rehearsal.text, "```"]
        }
        if !series.isEmpty {
            lines += ["", "## Scale series", "",
                      "Seconds and the worst live wait (ms) for each strategy as the table grows (OFFSET skipped above \(offsetLimit) rows: its cost grows with the square of the table).", ""]
            let strategies = Strategy.allCases.filter { s in series.contains { $0.results.contains { $0.strategy == s } } }
            lines.append("| rows | " + strategies.map { "\($0.rawValue) s / worst wait ms" }.joined(separator: " | ") + " |")
            lines.append("|---:|" + strategies.map { _ in "---:|" }.joined())
            for run in series {
                let cells = strategies.map { s -> String in
                    guard let r = run.results.first(where: { $0.strategy == s }) else { return "skipped" }
                    return String(format: "%.1f / %.0f", r.seconds, r.live?.maxMs ?? 0)
                }
                lines.append("| \(run.rows) | " + cells.joined(separator: " | ") + " |")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func table(_ run: SizeRun, heading: String) -> [String] {
        var lines = [heading, ""]
        if let b = run.baseline {
            lines.append(String(format: "Live traffic alone (baseline): %.0f TPS, p50 %.2f ms, p99 %.2f ms, max %.1f ms.", b.tps, b.p50Ms, b.p99Ms, b.maxMs))
            lines.append("")
        }
        if rounds > 1 {
            lines += ["\(rounds) rounds, the strategies alternating: seconds is the median (the range in brackets), rows/s and the ratios are from the medians, the other columns are the median round's.", ""]
        }
        lines.append("| strategy | seconds | rows/s | × single UPDATE | × loop | batches | batch p50 / p99 / max ms | live p50 / p99 / max ms | live TPS (× baseline) | WAL MB | first 10% / last 10% batch p50 ms |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        func ratio(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "-" }
        for r in run.results {
            let seconds = r.rounds.count > 1
                ? String(format: "%.2f (%.2f–%.2f)", r.seconds, r.secondsMin ?? 0, r.secondsMax ?? 0)
                : String(format: "%.2f", r.seconds)
            let live = r.live.map { String(format: "%.2f / %.2f / %.1f", $0.p50Ms, $0.p99Ms, $0.maxMs) } ?? "-"
            let tps = r.live.map { l in String(format: "%.0f (%.2f)", l.tps, run.baseline.map { l.tps / max($0.tps, 1) } ?? 0) } ?? "-"
            lines.append(String(
                format: "| %@ | %@ | %.0f | %@ | %@ | %d | %.1f / %.1f / %.1f | %@ | %@ | %.0f | %.1f / %.1f |",
                r.title, seconds, r.rowsPerSecond, ratio(r.ratioToSingleUpdate), ratio(r.ratioToLoop), r.batches,
                r.batchP50Ms, r.batchP99Ms, r.batchMaxMs, live, tps, Double(r.walBytes) / 1_048_576,
                r.first10pctBatchP50Ms, r.last10pctBatchP50Ms))
        }
        let checks = run.results.compactMap { r in r.verifySeconds.map { String(format: "%@ %.2f s", r.strategy.rawValue, $0) } }
        if !checks.isEmpty {
            lines += ["", "Backfill's seconds include its end-of-job check that no row still matches `where` (a full scan the other strategies skip): " + checks.joined(separator: ", ") + "."]
        }
        return lines
    }
}
