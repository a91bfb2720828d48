/// Structural checks on SQL written by the operator (`where`, `set` expressions, `sql`).
///
/// The operator's SQL is trusted to mean what it says, but it is spliced into a larger statement,
/// so it must not be able to escape its place: a `where` of `1=1) OR (true` would otherwise turn a
/// bounded batch into an update of the whole table. The database checks that the text parses and
/// type-checks (by preparing the real batch statement); this check makes sure it stays inside its
/// parentheses.
public enum SQLFragment {
    /// Returns what is wrong with the fragment's structure, or nil when its parentheses, quotes,
    /// dollar quotes and comments are balanced and it holds no statement separator.
    public static func problem(in text: String, allowTrailingSemicolon: Bool = false) -> String? {
        let chars = Array(text.unicodeScalars)
        var i = 0
        var depth = 0
        var semicolonAt: Int?
        func at(_ offset: Int) -> Unicode.Scalar? { i + offset < chars.count ? chars[i + offset] : nil }
        while i < chars.count {
            let c = chars[i]
            if let s = semicolonAt, !c.properties.isWhitespace, s < i {
                return "has more than one statement (`;` before the end)"
            }
            switch c {
            case "'", "\"":
                i += 1
                while true {
                    guard i < chars.count else { return "has an unclosed \(c == "'" ? "string" : "quoted identifier") (\(c))" }
                    if chars[i] == c {
                        if at(1) == c { i += 2; continue }
                        break
                    }
                    i += 1
                }
            case "-" where at(1) == "-":
                while i < chars.count, chars[i] != "\n" { i += 1 }
            case "/" where at(1) == "*":
                var nesting = 1
                i += 2
                while nesting > 0 {
                    guard i < chars.count else { return "has an unclosed /* comment" }
                    if chars[i] == "/", at(1) == "*" { nesting += 1; i += 1 }
                    else if chars[i] == "*", at(1) == "/" { nesting -= 1; i += 1 }
                    i += 1
                }
                continue
            case "$":
                var j = i + 1
                while j < chars.count, chars[j] == "_" || chars[j].properties.isAlphabetic || (j > i + 1 && chars[j].properties.numericType != nil) { j += 1 }
                if j < chars.count, chars[j] == "$", !(i > 0 && (chars[i - 1].properties.isAlphabetic || chars[i - 1].properties.numericType != nil)) {
                    let tag = Array(chars[i...j])
                    var k = j + 1
                    var closed = false
                    while k + tag.count <= chars.count {
                        if Array(chars[k..<(k + tag.count)]) == tag { closed = true; break }
                        k += 1
                    }
                    guard closed else { return "has an unclosed dollar-quoted string (\(String(String.UnicodeScalarView(tag))))" }
                    i = k + tag.count
                    continue
                }
            case "(":
                depth += 1
            case ")":
                depth -= 1
                if depth < 0 { return "closes a parenthesis it did not open" }
            case ";":
                if !allowTrailingSemicolon { return "contains `;`: only one expression is allowed here" }
                if depth > 0 { return "contains `;` inside parentheses" }
                semicolonAt = i
            default:
                break
            }
            i += 1
        }
        if depth > 0 { return "has an unclosed parenthesis" }
        return nil
    }
}
