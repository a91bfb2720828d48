import BackfillCore
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import SnapshotTesting
import Testing

/// A fixed rehearsal-like series: live latency with a stall, a job window, a gate, marks.
private func fixedChart() -> LineChart {
    func series(_ value: (Int) -> Double) -> [ChartPoint] {
        (0..<20).map { (i: Int) -> ChartPoint in ChartPoint(Double(i) + 0.5, i == 12 ? nil : value(i)) }
    }
    let p50 = series { 0.4 + Double($0 % 3) * 0.05 }
    let p99 = series { $0 >= 8 ? 9.5 : 1.2 }
    let max = series { $0 == 13 ? 1_450 : ($0 >= 8 ? 48 : 3.1) }
    var chart = LineChart(
        title: "Live latency per second", x: ChartAxis("time (s)", lowerBound: 0), y: ChartAxis("latency (ms, log scale)", scale: .log),
        series: [
            .init("max", color: ChartColor.vermillion, style: .line(dash: "2 2"), points: max),
            .init("p99", color: ChartColor.orange, style: .line(dash: "7 3"), points: p99),
            .init("p50", color: ChartColor.blue, points: p50),
        ])
    chart.spans = [.init(8...19.5), .init(12...13, color: ChartColor.vermillion, name: "no live transaction ended")]
    chart.verticalRules = [.init(8, label: "job start"), .init(19.5, label: "job end")]
    chart.horizontalRules = [.init(50, label: "gate live p99 ≤ 50 ms: passed", color: ChartColor.green),
                             .init(40, label: "gate max ≤ 40 ms: FAILED", color: ChartColor.vermillion)]
    chart.markKinds = [.init("retry", color: ChartColor.vermillion, symbol: .cross), .init("throttle", color: ChartColor.purple, symbol: .diamond)]
    chart.marks = [.init(x: 10.2, kind: 0, title: "retry lock_timeout"), .init(x: 13.1, kind: 1, title: "throttle blocking")]
    chart.note = "a gap is a second in which no live transaction ended"
    return chart
}

extension XMLElement {
    /// An attribute's value (FoundationXML's `attribute(forName:)` misses them on elements in a
    /// default namespace, as SVG's are).
    func attr(_ name: String) -> String? { attributes?.first { $0.name == name }?.stringValue }
}

extension Snapshotting where Value == String, Format == String {
    /// The SVG text, stored as `.svg` so that a reviewer can open the reference as a picture.
    static var svg: Snapshotting {
        var strategy = Snapshotting.lines
        strategy.pathExtension = "svg"
        return strategy
    }
}

@Suite("SVG charts")
struct ChartTests {
    @Test("a fixed series renders to the reviewed SVG")
    func lineChartSnapshot() {
        assertSnapshot(of: fixedChart().svg(), as: .svg, named: "rehearsal-latency")
    }

    @Test("a bar chart renders to the reviewed SVG")
    func barChartSnapshot() {
        let chart = BarChart(
            title: "Rows per second by strategy", axis: ChartAxis("rows per second"),
            groups: [.init("under 4 live writers", color: ChartColor.blue), .init("no live traffic", color: ChartColor.orange)],
            categories: [.init("1. one UPDATE, one transaction", values: [309_274, 321_066]), .init("2. OFFSET pagination", values: [12_541, nil]),
                         .init("4. Backfill, job defaults", values: [249_962, 281_509])])
        assertSnapshot(of: chart.svg(), as: .svg, named: "rows-per-second")
    }

    @Test("the SVG is well-formed XML, escapes text, and draws every measured point of a series")
    func wellFormed() throws {
        var chart = fixedChart()
        chart.title = "p99 < 50 & \"max\""
        let svg = chart.svg()
        let document = try XMLDocument(xmlString: svg)
        #expect(try document.nodes(forXPath: "//*[local-name()='title']").first?.stringValue == "p99 < 50 & \"max\"")
        // 19 of 20 seconds have a p50; the gap splits the line in two.
        let p50 = try document.nodes(forXPath: "//*[local-name()='g'][@data-series='p50']/*[local-name()='polyline']")
        #expect(p50.count == 2)
        let lists: [String] = p50.compactMap { ($0 as? XMLElement)?.attr("points") }
        let coordinates = lists.flatMap { $0.split(separator: " ") }
        #expect(coordinates.count == 19)
    }

    @Test("labels never overlap, even for rules close together")
    func noOverlaps() throws {
        var chart = fixedChart()
        chart.verticalRules = [.init(8, label: "job start"), .init(8.3, label: "job end"), .init(8.6, label: "another event")]
        chart.horizontalRules = [.init(50, label: "gate A ≤ 50 ms: passed"), .init(48, label: "gate B ≤ 48 ms: passed"), .init(47, label: "gate C ≤ 47 ms: FAILED")]
        let document = try XMLDocument(xmlString: chart.svg())
        let texts = try document.nodes(forXPath: "//*[local-name()='text'][@stroke='#ffffff']").compactMap { $0 as? XMLElement }
        #expect(texts.count == 6)
        let boxes = texts.map { t -> (Double, Double, Double, String) in
            let x = Double(t.attr("x") ?? "") ?? 0, y = Double(t.attr("y") ?? "") ?? 0
            let text = t.stringValue ?? ""
            let width = Double(text.count) * 11 * 0.62
            return (t.attr("text-anchor") == "end" ? x - width : x, y, width, text)
        }
        for (i, a) in boxes.enumerated() {
            for b in boxes[(i + 1)...] {
                let apart = a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || abs(a.1 - b.1) >= 13
                #expect(apart, "\(a.3) overlaps \(b.3)")
            }
        }
    }

    @Test("axes: nice linear ticks from zero, decades on a log scale, abbreviated counts", arguments: [
        (ChartAxis("s"), [0.0, 7.3], ["0", "2", "4", "6", "8"]),
        (ChartAxis("ms", scale: .log), [0.38, 6_439], ["0.1", "1", "10", "100", "1,000", "10,000"]),
        (ChartAxis("rows", format: .abbreviated), [250_000, 4_000_000], ["0", "1M", "2M", "3M", "4M"]),
        (ChartAxis("ratio"), [0.0, 0.93], ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]),
    ])
    func axisTicks(axis: ChartAxis, values: [Double], labels: [String]) {
        #expect(axis.tickLabels(for: values, maxTicks: 8) == labels)
    }
}
