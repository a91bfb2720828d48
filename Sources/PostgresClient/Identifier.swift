/// Quoting of SQL identifiers, so that user-supplied table and column names are never spliced
/// into SQL as written.
public enum Identifier {
    /// `a"b` → `"a""b"`: the same result as libpq's `PQescapeIdentifier` for UTF-8 text.
    public static func quote(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Splits `schema.table` the way PostgreSQL reads it: unquoted parts fold to lower case (ASCII
    /// letters only, as PostgreSQL folds them in UTF-8 databases: `ÄRGER` becomes `Ärger`), quoted
    /// parts keep their case and may contain dots and doubled quotes. Returns nil for a name that
    /// does not parse (empty parts, an unclosed quote, more than three parts).
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
                current.append(contentsOf: foldASCII(String(c)))
            }
        }
        guard !quoted, !current.isEmpty else { return nil }
        parts.append(current)
        return parts.count <= 3 ? parts : nil
    }

    /// A column name as a job file gives it: `"Line ID"` (quoted: exact, `""` for a quote), a
    /// plain SQL identifier such as `Balance` (folded as PostgreSQL folds it: `balance`), or any
    /// other text such as `Line ID`, which cannot be an unquoted identifier and is taken as the
    /// exact name. Returns nil for an empty name or an unclosed quote.
    public static func parseColumn(_ text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        if trimmed.hasPrefix("\"") {
            guard let parts = parseQualified(trimmed), parts.count == 1 else { return nil }
            return parts[0]
        }
        return isPlainIdentifier(trimmed) ? foldASCII(trimmed) : trimmed
    }

    /// Whether `text` can stand unquoted in SQL as one identifier: `[A-Za-z_\u{80}-][A-Za-z0-9_$\u{80}-]*`.
    public static func isPlainIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first else { return false }
        func start(_ s: Unicode.Scalar) -> Bool { s.value >= 0x80 || s == "_" || (s.isASCII && s.properties.isAlphabetic) }
        return start(first) && text.unicodeScalars.dropFirst().allSatisfy { start($0) || ("0"..."9").contains($0) || $0 == "$" }
    }

    /// Lower-cases ASCII letters only, as PostgreSQL's `downcase_identifier` does in UTF-8.
    public static func foldASCII(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { ("A"..."Z").contains($0) ? Unicode.Scalar($0.value + 32)! : $0 }))
    }

    /// The quoted form of parsed name parts: `["public", "accounts"]` → `"public"."accounts"`.
    public static func quoteQualified(_ parts: [String]) -> String {
        parts.map(quote).joined(separator: ".")
    }
}

import Foundation
