import Foundation

/// Okabe–Ito colours, distinguishable with every common colour-vision deficiency.
public enum ChartColor {
    public static let black = "#000000"
    public static let orange = "#E69F00"
    public static let skyBlue = "#56B4E9"
    public static let green = "#009E73"
    public static let yellow = "#F0E442"
    public static let blue = "#0072B2"
    public static let vermillion = "#D55E00"
    public static let purple = "#CC79A7"
    /// The palette in the order series take it (yellow last: it is faint on white).
    public static let series = [blue, orange, green, vermillion, purple, skyBlue, black, yellow]
}

/// A point of a series; a nil `y` breaks the line (nothing was measured there).
public struct ChartPoint: Sendable, Hashable {
    public var x: Double
    public var y: Double?
    public init(_ x: Double, _ y: Double?) { self.x = x; self.y = y }
}

/// A chart of values over a continuous x: lines and dots, with shaded spans, vertical and
/// horizontal rules (events, thresholds) and event marks, written as SVG by `svg()`. Labels are
/// placed so that none overlaps another.
public struct LineChart: Sendable {
    public struct Series: Sendable {
        public enum Style: Sendable, Hashable {
            /// A line, solid or dashed (an SVG dash array such as `6 3`).
            case line(dash: String?)
            /// One dot per point.
            case dots
        }

        public var name: String
        public var color: String
        public var style: Style
        public var points: [ChartPoint]
        /// A line that also marks each measured point with a dot (few points far apart).
        public var dotted: Bool

        public init(_ name: String, color: String, style: Style = .line(dash: nil), dotted: Bool = false, points: [ChartPoint]) {
            self.name = name
            self.color = color
            self.style = style
            self.dotted = dotted
            self.points = points
        }
    }

    /// A line across the plot at one value, labelled where it meets the plot's edge.
    public struct Rule: Sendable, Hashable {
        public var value: Double
        public var label: String
        public var color: String
        public var dash: String?

        public init(_ value: Double, label: String, color: String = "#555555", dash: String? = "4 3") {
            self.value = value
            self.label = label
            self.color = color
            self.dash = dash
        }
    }

    /// A shaded span of x; a named one is explained in the legend.
    public struct Span: Sendable, Hashable {
        public var range: ClosedRange<Double>
        public var color: String
        public var name: String?

        public init(_ range: ClosedRange<Double>, color: String = ChartColor.skyBlue, name: String? = nil) {
            self.range = range
            self.color = color
            self.name = name
        }
    }

    /// A kind of event drawn as a symbol in a strip above the plot, named in the legend.
    public struct MarkKind: Sendable, Hashable {
        public enum Symbol: Sendable, Hashable { case triangle, diamond, cross }
        public var name: String
        public var color: String
        public var symbol: Symbol

        public init(_ name: String, color: String, symbol: Symbol) {
            self.name = name
            self.color = color
            self.symbol = symbol
        }
    }

    /// One event at `x`; `title` is shown on hover.
    public struct Mark: Sendable, Hashable {
        public var x: Double
        public var kind: Int
        public var title: String

        public init(x: Double, kind: Int, title: String) {
            self.x = x
            self.kind = kind
            self.title = title
        }
    }

    public var title: String
    public var x: ChartAxis
    public var y: ChartAxis
    public var series: [Series]
    /// Shaded spans of x (such as the job's window).
    public var spans: [Span] = []
    public var verticalRules: [Rule] = []
    public var horizontalRules: [Rule] = []
    public var markKinds: [MarkKind] = []
    public var marks: [Mark] = []
    /// A line of text under the axis title, for what the picture does not say by itself.
    public var note: String?
    /// The least room left of the plot, so that charts stacked on one time axis line up.
    public var leftMargin: Double = 0

    public init(title: String, x: ChartAxis, y: ChartAxis, series: [Series]) {
        self.title = title
        self.x = x
        self.y = y
        self.series = series
    }

    /// The chart as a standalone SVG document.
    public func svg(width: Double = 760, height: Double = 320) -> String {
        var svg = SVG()
        draw(into: &svg, x0: 0, y0: 0, width: width, height: height)
        return svg.document(width: width, height: height, title: title)
    }

    /// Several charts stacked one above the other in one SVG document (small multiples).
    public static func stack(_ charts: [LineChart], title: String, width: Double = 760, panelHeight: Double = 220) -> String {
        var svg = SVG()
        svg.text(title, x: 8, y: 20, size: 15, weight: "bold")
        for (i, chart) in charts.enumerated() {
            svg.open("g", [("data-panel", String(i))])
            chart.draw(into: &svg, x0: 0, y0: 30 + Double(i) * panelHeight, width: width, height: panelHeight)
            svg.close("g")
        }
        return svg.document(width: width, height: 30 + Double(charts.count) * panelHeight, title: title)
    }

    func draw(into svg: inout SVG, x0: Double, y0: Double, width: Double, height: Double) {
        let tickSize = 11.0
        svg.text(title, x: x0 + 8, y: y0 + 18, size: 13.5, weight: "bold")

        // Legend: series, then event kinds, wrapped into rows.
        var legend: [(name: String, draw: (inout SVG, Double, Double) -> Void)] = series.map { s in
            (s.name, { svg, x, y in Self.swatch(s, into: &svg, x: x, y: y) })
        }
        var named: [Span] = []
        for span in spans where span.name != nil && !named.contains(where: { $0.name == span.name }) { named.append(span) }
        legend += named.map { span in
            (span.name!, { svg, x, y in svg.rect(x: x + 3, y: y - 6, width: 16, height: 12, fill: span.color, opacity: 0.3) })
        }
        legend += markKinds.filter { kind in marks.contains { markKinds[$0.kind] == kind } }.map { kind in
            (kind.name, { svg, x, y in Self.symbol(kind, into: &svg, x: x + 11, y: y, title: nil) })
        }
        var legendRow = 0, cursor = x0 + 8
        let legendTop = y0 + 36
        for item in legend {
            let itemWidth = 26 + SVG.textWidth(item.name, size: tickSize) + 14
            if cursor + itemWidth > x0 + width - 8 && cursor > x0 + 8 {
                legendRow += 1
                cursor = x0 + 8
            }
            let y = legendTop + Double(legendRow) * 16
            item.draw(&svg, cursor, y - 4)
            svg.text(item.name, x: cursor + 26, y: y, size: tickSize)
            cursor += itemWidth
        }
        let legendHeight = legend.isEmpty ? 0.0 : Double(legendRow + 1) * 16
        let stripHeight = marks.isEmpty ? 0.0 : 16.0

        // Axes: the y axis first (its labels set the left margin), then x ticks sized to fit.
        let allY = series.flatMap { $0.points.compactMap(\.y) } + horizontalRules.map(\.value)
        let allX = series.flatMap { $0.points.map(\.x) } + verticalRules.map(\.value) + spans.flatMap { [$0.range.lowerBound, $0.range.upperBound] } + marks.map(\.x)
        let plotTop = y0 + 30 + legendHeight + stripHeight + 6
        let plotBottom = y0 + height - (note == nil ? 40 : 56)
        let yLayout = y.layout(for: allY, maxTicks: max(2, Int((plotBottom - plotTop) / (y.scale == .log ? 17 : 26))))
        let yLabelWidth = yLayout.labels.map { SVG.textWidth($0, size: tickSize) }.max() ?? 0
        let plotLeft = x0 + max(26 + yLabelWidth + 6, leftMargin)
        let plotRight = x0 + width - 14
        var maxXTicks = 12
        var xLayout = x.layout(for: allX, maxTicks: maxXTicks)
        while maxXTicks > 2 {
            let widest = xLayout.labels.map { SVG.textWidth($0, size: tickSize) }.max() ?? 0
            if Double(xLayout.ticks.count) * (widest + 12) <= plotRight - plotLeft { break }
            maxXTicks -= 1
            xLayout = x.layout(for: allX, maxTicks: maxXTicks)
        }
        func px(_ v: Double) -> Double { plotLeft + xLayout.fraction(v) * (plotRight - plotLeft) }
        func py(_ v: Double) -> Double { plotBottom - yLayout.fraction(v) * (plotBottom - plotTop) }

        for span in spans {
            svg.rect(x: px(span.range.lowerBound), y: plotTop, width: px(span.range.upperBound) - px(span.range.lowerBound), height: plotBottom - plotTop,
                     fill: span.color, opacity: span.name == nil ? 0.12 : 0.3)
        }
        for (tick, label) in zip(yLayout.ticks, yLayout.labels) {
            svg.line(x1: plotLeft, y1: py(tick), x2: plotRight, y2: py(tick), stroke: "#e3e3e3")
            svg.text(label, x: plotLeft - 6, y: py(tick) + 4, anchor: "end", size: tickSize, fill: "#444444")
        }
        for (tick, label) in zip(xLayout.ticks, xLayout.labels) {
            svg.line(x1: px(tick), y1: plotBottom, x2: px(tick), y2: plotBottom + 4, stroke: "#444444")
            svg.text(label, x: px(tick), y: plotBottom + 16, anchor: "middle", size: tickSize, fill: "#444444")
        }
        svg.line(x1: plotLeft, y1: plotBottom, x2: plotRight, y2: plotBottom, stroke: "#444444")
        svg.line(x1: plotLeft, y1: plotTop, x2: plotLeft, y2: plotBottom, stroke: "#444444")
        svg.text(x.title, x: (plotLeft + plotRight) / 2, y: plotBottom + 33, anchor: "middle", size: 12)
        svg.text(y.title, x: x0 + 14, y: (plotTop + plotBottom) / 2, anchor: "middle", size: 12, rotate: true)
        if let note { svg.text(note, x: plotLeft, y: plotBottom + 50, size: 11, fill: "#555555") }

        for s in series {
            svg.open("g", [("data-series", s.name)])
            var run: [(Double, Double)] = []
            func flush() {
                if case .line(let dash) = s.style, run.count > 1 {
                    var attributes = [("points", run.map { "\(SVG.number($0.0)),\(SVG.number($0.1))" }.joined(separator: " ")),
                                      ("fill", "none"), ("stroke", s.color), ("stroke-width", "1.6"), ("stroke-linejoin", "round")]
                    if let dash { attributes.append(("stroke-dasharray", dash)) }
                    svg.element("polyline", attributes)
                    if s.dotted {
                        for (cx, cy) in run { svg.element("circle", [("cx", SVG.number(cx)), ("cy", SVG.number(cy)), ("r", "3"), ("fill", s.color)]) }
                    }
                } else {
                    for (cx, cy) in run {
                        svg.element("circle", [("cx", SVG.number(cx)), ("cy", SVG.number(cy)), ("r", s.style == .dots ? "2.2" : "1.8"), ("fill", s.color)])
                    }
                }
                run = []
            }
            for point in s.points {
                if let value = point.y { run.append((px(point.x), py(value))) } else { flush() }
            }
            flush()
            svg.close("g")
        }

        if !marks.isEmpty {
            let stripY = plotTop - 6 - stripHeight / 2
            svg.open("g", [("data-marks", String(marks.count))])
            for mark in marks { Self.symbol(markKinds[mark.kind], into: &svg, x: px(mark.x), y: stripY, title: mark.title) }
            svg.close("g")
        }

        // Rules, then their labels, each where it overlaps no other label.
        var placed: [Box] = []
        let labelSize = 11.0
        for rule in verticalRules {
            svg.line(x1: px(rule.value), y1: plotTop, x2: px(rule.value), y2: plotBottom, stroke: rule.color, width: 1.2, dash: rule.dash)
        }
        for rule in horizontalRules {
            svg.line(x1: plotLeft, y1: py(rule.value), x2: plotRight, y2: py(rule.value), stroke: rule.color, width: 1.4, dash: rule.dash)
        }
        for rule in verticalRules {
            let w = SVG.textWidth(rule.label, size: labelSize)
            let candidates = (0..<6).flatMap { row -> [Box] in
                let y = plotTop + 13 + Double(row) * 14
                return [Box(x: px(rule.value) + 3, y: y - 10, width: w, height: 13), Box(x: px(rule.value) - 3 - w, y: y - 10, width: w, height: 13)]
            }.filter { $0.x >= plotLeft && $0.x + $0.width <= plotRight }
            if let box = candidates.first(where: { c in !placed.contains { $0.overlaps(c) } }) ?? candidates.first {
                placed.append(box)
                svg.text(rule.label, x: box.x, y: box.y + 10, size: labelSize, fill: rule.color, halo: true)
            }
        }
        for rule in horizontalRules {
            let w = SVG.textWidth(rule.label, size: labelSize)
            let candidates = (0..<8).flatMap { step -> [Box] in
                let offset = Double(step) * 14
                return [Box(x: plotRight - 4 - w, y: py(rule.value) - 15 - offset, width: w, height: 13),
                        Box(x: plotRight - 4 - w, y: py(rule.value) + 3 + offset, width: w, height: 13)]
            }.filter { $0.y >= plotTop && $0.y + $0.height <= plotBottom }
            if let box = candidates.first(where: { c in !placed.contains { $0.overlaps(c) } }) ?? candidates.first {
                placed.append(box)
                svg.text(rule.label, x: box.x + box.width, y: box.y + 10, anchor: "end", size: labelSize, weight: "bold", fill: rule.color, halo: true)
            }
        }
    }

    /// A legend sample of a series' line or dot.
    static func swatch(_ s: Series, into svg: inout SVG, x: Double, y: Double) {
        switch s.style {
        case .line(let dash):
            svg.line(x1: x, y1: y, x2: x + 22, y2: y, stroke: s.color, width: 2, dash: dash)
        case .dots:
            svg.element("circle", [("cx", SVG.number(x + 11)), ("cy", SVG.number(y)), ("r", "3"), ("fill", s.color)])
        }
    }

    static func symbol(_ kind: MarkKind, into svg: inout SVG, x: Double, y: Double, title: String?) {
        let path: String
        switch kind.symbol {
        case .triangle: path = "M\(SVG.number(x)),\(SVG.number(y - 5)) L\(SVG.number(x + 5)),\(SVG.number(y + 4)) L\(SVG.number(x - 5)),\(SVG.number(y + 4)) Z"
        case .diamond: path = "M\(SVG.number(x)),\(SVG.number(y - 5)) L\(SVG.number(x + 5)),\(SVG.number(y)) L\(SVG.number(x)),\(SVG.number(y + 5)) L\(SVG.number(x - 5)),\(SVG.number(y)) Z"
        case .cross: path = "M\(SVG.number(x - 4)),\(SVG.number(y - 4)) L\(SVG.number(x + 4)),\(SVG.number(y + 4)) M\(SVG.number(x + 4)),\(SVG.number(y - 4)) L\(SVG.number(x - 4)),\(SVG.number(y + 4))"
        }
        let attributes = kind.symbol == .cross
            ? [("d", path), ("stroke", kind.color), ("stroke-width", "2"), ("fill", "none")]
            : [("d", path), ("fill", kind.color)]
        if let title {
            svg.open("path", attributes)
            svg.element("title", [], text: title)
            svg.close("path")
        } else {
            svg.element("path", attributes)
        }
    }
}

/// A label's rectangle, for placing labels where they overlap nothing.
struct Box: Sendable, Hashable {
    var x: Double
    var y: Double
    var width: Double
    var height: Double

    func overlaps(_ other: Box) -> Bool {
        x < other.x + other.width && other.x < x + width && y < other.y + other.height && other.y < y + height
    }
}
