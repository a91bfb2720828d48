import Foundation

/// One axis of a chart: its title (with the unit), linear or logarithmic, and how its tick
/// labels are written.
public struct ChartAxis: Sendable, Hashable {
    public enum Scale: Sendable, Hashable { case linear, log }
    public enum Format: Sendable, Hashable {
        /// `0.5`, `12`, `1,500`.
        case number
        /// `250k`, `1.5M`.
        case abbreviated
    }

    /// What the axis shows and in what unit, e.g. `latency (ms, log scale)`.
    public var title: String
    public var scale: Scale
    public var format: Format
    /// Fixed ends; nil takes them from the data (a linear axis then starts at 0).
    public var lowerBound: Double?
    public var upperBound: Double?

    public init(_ title: String, scale: Scale = .linear, format: Format = .number, lowerBound: Double? = nil, upperBound: Double? = nil) {
        self.title = title
        self.scale = scale
        self.format = format
        self.lowerBound = lowerBound
        self.upperBound = upperBound
    }

    /// The axis' ends and ticks for `values`, with at most `maxTicks` ticks.
    func layout(for values: [Double], maxTicks: Int) -> AxisLayout {
        switch scale {
        case .linear: linearLayout(values, maxTicks: max(2, maxTicks))
        case .log: logLayout(values.filter { $0 > 0 }, maxTicks: max(2, maxTicks))
        }
    }

    private func linearLayout(_ values: [Double], maxTicks: Int) -> AxisLayout {
        var lo = lowerBound ?? min(0, values.min() ?? 0)
        var hi = upperBound ?? (values.max() ?? 1)
        if hi <= lo { hi = lo + (lo == 0 ? 1 : abs(lo)) }
        var step = Self.niceStep((hi - lo) / Double(maxTicks - 1))
        while true {
            let first = (lo / step).rounded(.down) * step, last = (hi / step).rounded(.up) * step
            let count = Int(((last - first) / step).rounded()) + 1
            if count <= maxTicks {
                if lowerBound == nil { lo = first }
                if upperBound == nil { hi = last }
                let slack = step * 1e-9
                let ticks: [Double] = (0..<count).map { first + Double($0) * step }.filter { (lo - slack)...(hi + slack) ~= $0 }
                return AxisLayout(lo: lo, hi: hi, log: false, ticks: ticks, labels: ticks.map { label($0, step: step) })
            }
            step = Self.niceStep(step * 1.01)
        }
    }

    private func logLayout(_ values: [Double], maxTicks: Int) -> AxisLayout {
        let low = lowerBound ?? values.min() ?? 1, high = upperBound ?? values.max() ?? 10
        var first = log10(max(low, 1e-9)).rounded(.down), last = log10(max(high, 1e-9)).rounded(.up)
        if last <= first { last = first + 1 }
        var decadeStep = 1.0
        while (last - first) / decadeStep + 1 > Double(maxTicks) { decadeStep += 1 }
        first = (first / decadeStep).rounded(.down) * decadeStep
        last = (last / decadeStep).rounded(.up) * decadeStep
        var ticks: [Double] = []
        for decade in stride(from: first, through: last, by: decadeStep) {
            let base = pow(10, decade)
            ticks.append(base)
            if last - first <= 2 && decade < last && (last - first + 1) * 3 <= Double(maxTicks) { ticks += [2 * base, 5 * base] }
        }
        return AxisLayout(lo: pow(10, first), hi: pow(10, last), log: true, ticks: ticks, labels: ticks.map { label($0, step: $0) })
    }

    /// The tick labels the axis shows for `values` with at most `maxTicks` ticks.
    public func tickLabels(for values: [Double], maxTicks: Int) -> [String] { layout(for: values, maxTicks: maxTicks).labels }

    /// 1, 2 or 5 × a power of ten, at least `rough`.
    static func niceStep(_ rough: Double) -> Double {
        guard rough > 0, rough.isFinite else { return 1 }
        let magnitude = pow(10, log10(rough).rounded(.down))
        for factor in [1.0, 2, 5, 10] where factor * magnitude >= rough * (1 - 1e-9) { return factor * magnitude }
        return 10 * magnitude
    }

    /// A tick label: as many decimals as the step needs.
    func label(_ value: Double, step: Double) -> String {
        let decimals = step >= 1 ? 0 : Int((-log10(step)).rounded(.up))
        switch format {
        case .abbreviated where abs(value) >= 1_000_000: return Self.trimmed(value / 1_000_000, decimals: 2) + "M"
        case .abbreviated where abs(value) >= 1_000: return Self.trimmed(value / 1_000, decimals: 1) + "k"
        default:
            if decimals > 0 { return String(format: "%.\(decimals)f", value) }
            return Self.grouped(Int64(value.rounded()))
        }
    }

    /// `value` with at most `decimals` decimals and no trailing zeros.
    static func trimmed(_ value: Double, decimals: Int) -> String {
        var text = String(format: "%.\(decimals)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }

    /// `1234567` → `1,234,567`.
    public static func grouped(_ value: Int64) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (value < 0 ? "-" : "") + out
    }
}

/// An axis laid out: its ends, ticks and their labels, and where a value falls along it.
struct AxisLayout: Sendable, Hashable {
    var lo: Double
    var hi: Double
    var log: Bool
    var ticks: [Double]
    var labels: [String]

    /// Where `value` falls, from 0 (the low end) to 1 (the high end), clamped.
    func fraction(_ value: Double) -> Double {
        let f: Double
        if log {
            let v = Foundation.log10(max(value, lo))
            f = (v - Foundation.log10(lo)) / (Foundation.log10(hi) - Foundation.log10(lo))
        } else {
            f = (value - lo) / (hi - lo)
        }
        return min(1, max(0, f))
    }
}
