/// Quoting of SQL identifiers, so that user-supplied table and column names are never spliced
/// into SQL as written.
public enum Identifier {
    /// `a"b` → `"a""b"`: the same result as libpq's `PQescapeIdentifier` for UTF-8 text.
    public static func quote(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Splits `schema.table` the way PostgreSQL reads it: unquoted parts fold to lower case,
    /// quoted parts keep their case and may contain dots and doubled quotes. Returns nil for a name
    /// that does not parse (empty parts, an unclosed quote, more than three parts).
    public static func parseQualified(_ text: String) -> [String]? {
        var parts: [String] = []
        var current = ""
        var quoted = false
        var wasQuoted = false
        var chars = Array(text.trimmingCharacters(in: .whitespaces))[...]
        while let c = chars.popFirst() {
            if quoted {
                if c == "\"" {
                    if chars.first == "\"" {
                        current.append("\"")
                        chars.removeFirst()
                    } else {
                        quoted = false
                    }
                } else {
                    current.append(c)
                }
            } else if c == "\"" {
                guard current.isEmpty else { return nil }
                quoted = true
                wasQuoted = true
            } else if c == "." {
                guard !current.isEmpty else { return nil }
                parts.append(current)
                current = ""
                wasQuoted = false
            } else {
                guard !wasQuoted, !c.isWhitespace else { return nil }
                current.append(contentsOf: c.lowercased())
            }
        }
        guard !quoted, !current.isEmpty else { return nil }
        parts.append(current)
        return parts.count <= 3 ? parts : nil
    }

    /// The quoted form of parsed name parts: `["public", "accounts"]` → `"public"."accounts"`.
    public static func quoteQualified(_ parts: [String]) -> String {
        parts.map(quote).joined(separator: ".")
    }
}

import Foundation
