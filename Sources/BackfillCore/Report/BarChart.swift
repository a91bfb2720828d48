import Foundation

/// Horizontal bars, one row per category and one bar per group in it, each labelled with its
/// value; category names sit left of the bars, so long names never collide.
public struct BarChart: Sendable {
    public struct Group: Sendable, Hashable {
        public var name: String
        public var color: String
        public init(_ name: String, color: String) { self.name = name; self.color = color }
    }

    public struct Category: Sendable, Hashable {
        public var label: String
        /// One value per group; nil where the group has none (no bar).
        public var values: [Double?]
        public init(_ label: String, values: [Double?]) { self.label = label; self.values = values }
    }

    public var title: String
    public var axis: ChartAxis
    public var groups: [Group]
    public var categories: [Category]
    /// How a bar's value is written at its end.
    public var valueFormat: @Sendable (Double) -> String = { ChartAxis.grouped(Int64($0.rounded())) }

    public init(title: String, axis: ChartAxis, groups: [Group], categories: [Category]) {
        self.title = title
        self.axis = axis
        self.groups = groups
        self.categories = categories
    }

    /// The chart as an SVG document `width` pixels wide, as tall as its rows need.
    public func svg(width: Double = 760) -> String {
        var svg = SVG()
        let size = 11.0, barHeight = 14.0, gap = 10.0
        svg.text(title, x: 8, y: 18, size: 13.5, weight: "bold")
        var cursor = 8.0
        for group in groups where groups.count > 1 {
            svg.rect(x: cursor, y: 28, width: 14, height: 10, fill: group.color)
            svg.text(group.name, x: cursor + 20, y: 37, size: size)
            cursor += 20 + SVG.textWidth(group.name, size: size) + 16
        }
        let top = groups.count > 1 ? 52.0 : 32.0
        let rowHeight = Double(groups.count) * barHeight + gap
        let plotBottom = top + Double(categories.count) * rowHeight
        let labelWidth = categories.map { SVG.textWidth($0.label, size: size) }.max() ?? 0
        let plotLeft = 8 + labelWidth + 8
        let values = categories.flatMap { $0.values.compactMap { $0 } }
        let widestValue = values.map { SVG.textWidth(valueFormat($0), size: size) }.max() ?? 0
        let plotRight = width - 12 - widestValue
        var maxTicks = 10
        var layout = axis.layout(for: values, maxTicks: maxTicks)
        while maxTicks > 2, Double(layout.ticks.count) * ((layout.labels.map { SVG.textWidth($0, size: size) }.max() ?? 0) + 12) > plotRight - plotLeft {
            maxTicks -= 1
            layout = axis.layout(for: values, maxTicks: maxTicks)
        }
        func px(_ v: Double) -> Double { plotLeft + layout.fraction(v) * (plotRight - plotLeft) }
        for (tick, label) in zip(layout.ticks, layout.labels) {
            svg.line(x1: px(tick), y1: top - 4, x2: px(tick), y2: plotBottom, stroke: "#e3e3e3")
            svg.text(label, x: px(tick), y: plotBottom + 15, anchor: "middle", size: size, fill: "#444444")
        }
        for (row, category) in categories.enumerated() {
            let y = top + Double(row) * rowHeight
            svg.text(category.label, x: plotLeft - 8, y: y + Double(groups.count) * barHeight / 2 + 4, anchor: "end", size: size)
            svg.open("g", [("data-category", category.label)])
            for (i, value) in category.values.enumerated() {
                guard let value, i < groups.count else { continue }
                let barY = y + Double(i) * barHeight
                svg.rect(x: plotLeft, y: barY + 1, width: px(value) - plotLeft, height: barHeight - 2, fill: groups[i].color)
                svg.text(valueFormat(value), x: px(value) + 4, y: barY + barHeight - 3, size: size, fill: "#222222")
            }
            svg.close("g")
        }
        svg.line(x1: plotLeft, y1: top - 4, x2: plotLeft, y2: plotBottom, stroke: "#444444")
        svg.line(x1: plotLeft, y1: plotBottom, x2: plotRight, y2: plotBottom, stroke: "#444444")
        svg.text(axis.title, x: (plotLeft + plotRight) / 2, y: plotBottom + 32, anchor: "middle", size: 12)
        return svg.document(width: width, height: plotBottom + 44, title: title)
    }
}
