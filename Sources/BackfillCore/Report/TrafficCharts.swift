import Foundation

/// A window of live traffic placed on a time axis: its figures and when it started, in seconds
/// from the axis' origin.
public struct TrafficWindow: Sendable {
    public var start: Double
    public var figures: TrafficFigures

    public init(start: Double, figures: TrafficFigures) {
        self.start = start
        self.figures = figures
    }

    /// Where second `i` of the window is drawn: its middle, or the window's end for a last
    /// second cut short.
    func x(_ second: TrafficSecond) -> Double {
        start + min(Double(second.second) + 0.5, max(figures.seconds, 0))
    }

    /// The seconds in which no live transaction ended: every client was waiting.
    var stalls: [LineChart.Span] {
        figures.series.filter { $0.transactions == 0 && $0.errors == 0 }.map { second in
            let from = start + Double(second.second)
            return LineChart.Span(from...min(from + 1, start + figures.seconds), color: ChartColor.vermillion, name: "no live transaction ended: all waiting")
        }
    }
}

extension LineChart {
    /// Live latency per second (p50, p99 and max, log scale) over one or more windows.
    public static func liveLatency(title: String, windows: [TrafficWindow], xTitle: String = "time (s)") -> LineChart {
        let points = { (value: KeyPath<TrafficSecond, Double?>) in
            windows.flatMap { w in w.figures.series.map { ChartPoint(w.x($0), $0[keyPath: value]) } }
        }
        var chart = LineChart(
            title: title, x: ChartAxis(xTitle, lowerBound: 0), y: ChartAxis("latency (ms, log scale)", scale: .log),
            series: [
                Series("max", color: ChartColor.vermillion, style: .line(dash: "2 2"), points: points(\.maxMs)),
                Series("p99", color: ChartColor.orange, style: .line(dash: "7 3"), points: points(\.p99Ms)),
                Series("p50", color: ChartColor.blue, points: points(\.p50Ms)),
            ])
        chart.spans = windows.flatMap(\.stalls)
        return chart
    }

    /// Live transactions per second over one or more windows.
    public static func liveTPS(title: String, windows: [TrafficWindow], xTitle: String = "time (s)") -> LineChart {
        LineChart(
            title: title, x: ChartAxis(xTitle, lowerBound: 0), y: ChartAxis("transactions per second"),
            series: [Series("live TPS", color: ChartColor.blue, points: windows.flatMap { w in w.figures.series.map { ChartPoint(w.x($0), $0.tps) } })])
    }
}
