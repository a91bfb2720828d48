import Foundation

/// A minimal SVG writer: elements appended as text, attribute values escaped, numbers printed
/// with one decimal so that the same chart always produces the same bytes.
struct SVG {
    private(set) var body: [String] = []

    /// Appends `<name attributes…/>`, or `<name …>text</name>` when `text` is given.
    mutating func element(_ name: String, _ attributes: [(String, String)], text: String? = nil) {
        let attrs = attributes.map { " \($0.0)=\"\(Self.escape($0.1))\"" }.joined()
        if let text {
            body.append("<\(name)\(attrs)>\(Self.escape(text))</\(name)>")
        } else {
            body.append("<\(name)\(attrs)/>")
        }
    }

    /// Opens a group; close it with `close("g")`.
    mutating func open(_ name: String, _ attributes: [(String, String)] = []) {
        body.append("<\(name)\(attributes.map { " \($0.0)=\"\(Self.escape($0.1))\"" }.joined())>")
    }

    mutating func close(_ name: String) { body.append("</\(name)>") }

    /// Text, `anchor` being `start`, `middle` or `end`; `halo` paints a white outline under the
    /// glyphs so that the text stays readable over lines.
    mutating func text(_ string: String, x: Double, y: Double, anchor: String = "start", size: Double = 12,
                       weight: String? = nil, fill: String = "#222222", rotate: Bool = false, halo: Bool = false) {
        var attributes = [("x", Self.number(x)), ("y", Self.number(y)), ("font-size", Self.number(size)), ("text-anchor", anchor), ("fill", fill)]
        if let weight { attributes.append(("font-weight", weight)) }
        if rotate { attributes.append(("transform", "rotate(-90 \(Self.number(x)) \(Self.number(y)))")) }
        if halo { attributes += [("stroke", "#ffffff"), ("stroke-width", "3"), ("stroke-linejoin", "round"), ("paint-order", "stroke")] }
        element("text", attributes, text: string)
    }

    mutating func line(x1: Double, y1: Double, x2: Double, y2: Double, stroke: String, width: Double = 1, dash: String? = nil) {
        var attributes = [("x1", Self.number(x1)), ("y1", Self.number(y1)), ("x2", Self.number(x2)), ("y2", Self.number(y2)),
                          ("stroke", stroke), ("stroke-width", Self.number(width))]
        if let dash { attributes.append(("stroke-dasharray", dash)) }
        element("line", attributes)
    }

    mutating func rect(x: Double, y: Double, width: Double, height: Double, fill: String, stroke: String? = nil, opacity: Double? = nil) {
        var attributes = [("x", Self.number(x)), ("y", Self.number(y)), ("width", Self.number(max(0, width))), ("height", Self.number(max(0, height))), ("fill", fill)]
        if let stroke { attributes.append(("stroke", stroke)) }
        if let opacity { attributes.append(("fill-opacity", Self.number(opacity, decimals: 2))) }
        element("rect", attributes)
    }

    /// The whole document, `width` × `height` pixels, with a title for screen readers.
    func document(width: Double, height: Double, title: String) -> String {
        let header = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Self.number(width)) \(Self.number(height))\" width=\"\(Self.number(width))\" height=\"\(Self.number(height))\" role=\"img\" aria-label=\"\(Self.escape(title))\" font-family=\"'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif\">"
        return ([header, "<title>\(Self.escape(title))</title>", "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>"] + body + ["</svg>"]).joined(separator: "\n") + "\n"
    }

    /// Escapes text for XML content and attribute values.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    /// A coordinate or size, with `decimals` decimals and no `-0`.
    static func number(_ value: Double, decimals: Int = 1) -> String {
        let text = String(format: "%.\(decimals)f", value)
        return text.hasPrefix("-") && Double(text) == 0 ? String(text.dropFirst()) : text
    }

    /// The width of `text` at `size` px, estimated generously (0.62 em a character), for layout
    /// that must not overlap.
    static func textWidth(_ text: String, size: Double) -> Double { Double(text.count) * size * 0.62 }
}
