import BackfillCore
import Foundation

/// The pictures of a benchmark run, written as SVG next to RESULTS.md.
struct Chart {
    var file: String
    var title: String
    var svg: String
}

extension Report {
    /// Live write latency over time for each strategy (one panel each, same latency scale), rows/s
    /// by strategy, and seconds against table size for the scale series.
    var charts: [Chart] {
        var charts: [Chart] = []
        let windows = ([main.baseline.map { ("live traffic alone (baseline)", $0) }].compactMap { $0 })
            + main.results.compactMap { r in r.live.map { (r.title, $0) } }
        if !windows.isEmpty {
            let all = windows.flatMap { $0.1.series.compactMap(\.maxMs) } + windows.flatMap { $0.1.series.compactMap(\.p50Ms) }
            let panels = windows.map { title, live -> LineChart in
                var chart = LineChart.liveLatency(
                    title: String(format: "%@ — worst wait %@ ms", title, ChartAxis.grouped(Int64(live.maxMs.rounded()))),
                    windows: [TrafficWindow(start: 0, figures: live)], xTitle: "seconds since the strategy started")
                chart.y.lowerBound = all.min()
                chart.y.upperBound = all.max()
                return chart
            }
            let title = "Live write latency per second, \(ChartAxis.grouped(Int64(main.rows))) rows, \(liveClients) live writers"
            charts.append(Chart(file: "live-latency.svg", title: "Live write latency over time, by strategy", svg: LineChart.stack(panels, title: title, panelHeight: 240)))
        }

        var groups = [BarChart.Group(main.baseline == nil ? "no live traffic" : "under \(liveClients) live writers", color: ChartColor.blue)]
        if quiet != nil { groups.append(BarChart.Group("no live traffic", color: ChartColor.orange)) }
        let categories = main.results.map { r in
            BarChart.Category(r.title, values: [r.rowsPerSecond] + (quiet.map { q in [q.results.first { $0.strategy == r.strategy }?.rowsPerSecond] } ?? []))
        }
        let bars = BarChart(title: "Rows per second by strategy, \(ChartAxis.grouped(Int64(main.rows))) rows", axis: ChartAxis("rows per second"), groups: groups, categories: categories)
        charts.append(Chart(file: "rows-per-second.svg", title: "Rows per second by strategy", svg: bars.svg()))

        if !series.isEmpty {
            let strategies = Strategy.allCases.filter { s in series.contains { $0.results.contains { $0.strategy == s } } }
            let lines = strategies.enumerated().map { i, s in
                LineChart.Series(
                    s.rawValue, color: ChartColor.series[i % ChartColor.series.count], style: .line(dash: i % 2 == 1 ? "6 3" : nil), dotted: true,
                    points: series.compactMap { run in run.results.first { $0.strategy == s }.map { ChartPoint(Double(run.rows), $0.seconds) } })
            }
            var chart = LineChart(
                title: "Seconds to fill the column against table size", x: ChartAxis("table size (rows)", format: .abbreviated, lowerBound: 0),
                y: ChartAxis("seconds (log scale)", scale: .log), series: lines)
            chart.note = "OFFSET pagination is skipped above \(ChartAxis.grouped(Int64(offsetLimit))) rows: its cost grows with the square of the table"
            charts.append(Chart(file: "scale-series.svg", title: "Seconds against table size", svg: chart.svg()))
        }
        return charts
    }

}
