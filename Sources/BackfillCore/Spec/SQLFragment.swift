/// Structural checks on SQL written by the operator (`where`, `set` expressions, `sql`,
/// `check_sql`).
///
/// The operator's SQL is trusted to mean what it says, but it is spliced into a larger statement,
/// so it must not be able to escape its place: a `where` of `1=1) OR (true` would otherwise turn a
/// bounded batch into an update of the whole table. The database checks that the text parses and
/// type-checks (by preparing the real batch statement, one statement by protocol); this check
/// makes sure it stays inside its parentheses.
///
/// It reads the text the way PostgreSQL's own lexer (`src/backend/parser/scan.l`) does, byte by
/// byte in UTF-8: standard, `E''`, `B''`/`X''`, `N''` and `U&''` strings with `''` doubling, backslash
/// escapes in `E''` strings (and in plain ones when `standard_conforming_strings` is off), string
/// continuation across a newline, dollar quotes whose tags follow PostgreSQL's identifier
/// classes (a `$` inside an identifier such as `_$a$` is part of the identifier, not a tag),
/// nested `/* */` comments, `--` comments ended by `\n` or `\r`, and quoted identifiers with `""`.
/// A fragment is read with `standard_conforming_strings` both on and off, and refused unless both
/// readings agree, so that no server setting can change where it ends.
public enum SQLFragment {
    /// Returns what is wrong with the fragment's structure, or nil when its parentheses, quotes,
    /// dollar quotes and comments are balanced, it holds no statement separator and no parameter,
    /// and it contains nothing a reviewer cannot see.
    public static func problem(in text: String, allowTrailingSemicolon: Bool = false) -> String? {
        if let hidden = hiddenCharacter(in: text) { return hidden }
        let bytes = Array(text.utf8)
        let standard: Reading, escaped: Reading
        switch (read(bytes, standardConformingStrings: true), read(bytes, standardConformingStrings: false)) {
        case (.failure(let problem), _):
            return problem.message
        case (.success, .failure(let problem)):
            return "\(problem.message) when the server has standard_conforming_strings = off (a backslash before a quote then escapes it); write the string as E'…' with its backslashes doubled, or leave out the backslash"
        case (.success(let on), .success(let off)):
            (standard, escaped) = (on, off)
        }
        guard standard.marks == escaped.marks else {
            return "reads differently when the server has standard_conforming_strings = off (a backslash before a quote then escapes it); write the string as E'…' with its backslashes doubled, or leave out the backslash"
        }
        var depth = 0
        var semicolon: Int?
        if let last = standard.marks.last(where: { $0.kind == .semicolon }), last.offset != standard.lastToken {
            return allowTrailingSemicolon ? "has more than one statement (`;` before the end)" : "contains `;`: only one expression is allowed here"
        }
        for mark in standard.marks {
            if semicolon != nil { return "has more than one statement (`;` before the end)" }
            switch mark.kind {
            case .open: depth += 1
            case .close:
                depth -= 1
                if depth < 0 { return "closes a parenthesis it did not open (byte \(mark.offset + 1))" }
            case .semicolon:
                if !allowTrailingSemicolon { return "contains `;`: only one expression is allowed here" }
                if depth > 0 { return "contains `;` inside parentheses" }
                semicolon = mark.offset
            case .parameter:
                return "uses a parameter (`$` followed by digits, byte \(mark.offset + 1)); job SQL takes no parameters: write the value itself"
            }
        }
        if depth > 0 { return "has an unclosed parenthesis" }
        return nil
    }

    /// A statement without its closing `;` (and anything after it, which can only be white space
    /// and comments in a statement `problem(in:allowTrailingSemicolon:)` accepted).
    public static func droppingTrailingSemicolon(_ text: String) -> String {
        guard case .success(let reading) = read(Array(text.utf8), standardConformingStrings: true),
              let last = reading.marks.last, last.kind == .semicolon
        else { return text }
        return String(decoding: Array(text.utf8)[..<last.offset], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the fragment ends inside a `--` comment, which would swallow whatever the batch
    /// statement puts after it on the same line. `JobSpec` ends such a fragment with a newline.
    public static func endsInLineComment(_ text: String) -> Bool {
        if case .success(let reading) = read(Array(text.utf8), standardConformingStrings: true) {
            return reading.endsInLineComment
        }
        return false
    }

    /// The first character that a reviewer cannot see or that has no place in a job file, as a
    /// problem for people, or nil. Tab and newline are allowed; every other control character
    /// (NUL, carriage return, escape …), format characters (zero-width spaces and joiners, bidi
    /// overrides, the byte order mark), spaces other than U+0020, line and paragraph separators,
    /// private-use and unassigned code points, variation selectors and blank-looking letters are
    /// refused.
    public static func hiddenCharacter(in text: String) -> String? {
        for (offset, scalar) in text.unicodeScalars.enumerated() where isHidden(scalar) {
            let hex = String(scalar.value, radix: 16, uppercase: true)
            let code = "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
            return "contains an invisible or control character \(code)\(scalar.properties.name.map { " (\($0))" } ?? "") at character \(offset + 1)"
        }
        return nil
    }

    static func isHidden(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\t" || scalar == "\n" { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .privateUse, .unassigned, .surrogate, .lineSeparator, .paragraphSeparator:
            return true
        case .spaceSeparator:
            return scalar != " "
        default:
            break
        }
        switch scalar.value {
        case 0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B...0x180F, 0x2800, 0x3164, 0xFE00...0xFE0F, 0xFFA0, 0xE0100...0xE01EF:
            return true  // combining grapheme joiner, Hangul fillers, variation selectors, braille blank
        default:
            return false
        }
    }

    // MARK: - The lexer

    /// A character that matters to the structure, outside strings, identifiers and comments.
    struct Mark: Equatable {
        enum Kind: Equatable { case open, close, semicolon, parameter }
        var kind: Kind
        var offset: Int
    }

    struct Reading: Equatable {
        var marks: [Mark] = []
        var endsInLineComment = false
        /// Where the last token that is not white space or a comment starts.
        var lastToken: Int?
    }

    struct Problem: Error {
        var message: String
    }

    private static let quote = UInt8(ascii: "'"), doubleQuote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    private static let dollar = UInt8(ascii: "$"), dash = UInt8(ascii: "-"), slash = UInt8(ascii: "/"), star = UInt8(ascii: "*")
    private static let newlineBytes: Set<UInt8> = [0x0A, 0x0D]
    private static let horizontalSpace: Set<UInt8> = [0x20, 0x09, 0x0C]
    private static let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D, 0x0C]

    /// `ident_start`: `[A-Za-z\200-\377_]`.
    static func isIdentStart(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b >= 0x80
    }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    /// `dolq_cont`: an identifier character other than `$`.
    static func isTagContinue(_ b: UInt8) -> Bool { isIdentStart(b) || isDigit(b) }
    /// `ident_cont`: `[A-Za-z\200-\377_0-9\$]`.
    static func isIdentContinue(_ b: UInt8) -> Bool { isTagContinue(b) || b == dollar }

    /// How a quoted string treats its contents.
    private enum StringKind {
        /// `'…'` with standard_conforming_strings on, `U&'…'`: `''` is a quote, `\` is a letter.
        case standard
        /// `E'…'`, or `'…'` with standard_conforming_strings off: `\` escapes the next byte.
        case escaped
        /// `B'…'`, `X'…'`: no escapes at all; `''` ends the string and starts another.
        case bits
    }

    /// Reads the text as PostgreSQL's lexer does and returns the structural marks, or the first
    /// lexical error (an unclosed string, quoted identifier, dollar quote or comment).
    static func read(_ b: [UInt8], standardConformingStrings: Bool) -> Result<Reading, Problem> {
        var reading = Reading()
        var i = 0
        let n = b.count
        func at(_ k: Int) -> UInt8? { k < n ? b[k] : nil }
        do throws(Problem) {
            while i < n {
                let c = b[i]
                reading.endsInLineComment = false
                if c == dash, at(i + 1) == dash {
                    i += 2
                    while i < n, !newlineBytes.contains(b[i]) { i += 1 }
                    reading.endsInLineComment = i == n
                    continue
                }
                if c == slash, at(i + 1) == star {
                    i = try skipBlockComment(b, from: i)
                    continue
                }
                if space.contains(c) {
                    i += 1
                    continue
                }
                reading.lastToken = i
                if c == quote {
                    i = try skipString(b, from: i + 1, kind: standardConformingStrings ? .standard : .escaped)
                } else if c == doubleQuote {
                    i = try skipQuotedIdentifier(b, from: i + 1)
                } else if c == dollar {
                    i = try skipDollar(b, at: i, reading: &reading)
                } else if isDigit(c) || (c == UInt8(ascii: ".") && at(i + 1).map(isDigit) == true) {
                    i = skipNumber(b, from: i)
                } else if isIdentStart(c) {
                    i = try skipWord(b, at: i, standardConformingStrings: standardConformingStrings)
                } else {
                    switch c {
                    case UInt8(ascii: "("): reading.marks.append(Mark(kind: .open, offset: i))
                    case UInt8(ascii: ")"): reading.marks.append(Mark(kind: .close, offset: i))
                    case UInt8(ascii: ";"): reading.marks.append(Mark(kind: .semicolon, offset: i))
                    default: break
                    }
                    i += 1
                }
            }
        } catch {
            return .failure(error)
        }
        return .success(reading)
    }

    /// `/* … */`, nested as PostgreSQL nests them. Returns the offset after the comment.
    private static func skipBlockComment(_ b: [UInt8], from start: Int) throws(Problem) -> Int {
        var depth = 1
        var i = start + 2
        while depth > 0 {
            guard i < b.count else { throw Problem(message: "has an unclosed /* comment") }
            if b[i] == slash, i + 1 < b.count, b[i + 1] == star {
                depth += 1
                i += 2
            } else if b[i] == star, i + 1 < b.count, b[i + 1] == slash {
                depth -= 1
                i += 2
            } else {
                i += 1
            }
        }
        return i
    }

    /// The body of a quoted string from just after its opening quote; returns the offset after
    /// its closing quote, following `quotecontinue` (a quote, whitespace with a newline, a quote)
    /// into the next segment.
    private static func skipString(_ b: [UInt8], from start: Int, kind: StringKind) throws(Problem) -> Int {
        var i = start
        while true {
            guard i < b.count else { throw Problem(message: "has an unclosed string (')") }
            let c = b[i]
            if kind == .escaped, c == backslash {
                guard i + 1 < b.count else { throw Problem(message: "has an unclosed string (')") }
                i += 2
                continue
            }
            guard c == quote else {
                i += 1
                continue
            }
            if kind != .bits, i + 1 < b.count, b[i + 1] == quote {
                i += 2
                continue
            }
            if let next = continuation(b, after: i + 1) {
                i = next + 1
                continue
            }
            return i + 1
        }
    }

    /// `{whitespace_with_newline}{quote}` after a closing quote: the offset of the quote that
    /// continues the string, or nil when the string ends.
    private static func continuation(_ b: [UInt8], after start: Int) -> Int? {
        var i = start
        func skipComment() -> Bool {
            guard i + 1 < b.count, b[i] == dash, b[i + 1] == dash else { return false }
            i += 2
            while i < b.count, !newlineBytes.contains(b[i]) { i += 1 }
            return true
        }
        while i < b.count {
            if horizontalSpace.contains(b[i]) { i += 1 } else if !skipComment() { break }
        }
        guard i < b.count, newlineBytes.contains(b[i]) else { return nil }
        i += 1
        while i < b.count {
            if space.contains(b[i]) {
                i += 1
            } else if skipComment() {
                guard i < b.count else { return nil }
            } else {
                break
            }
        }
        return i < b.count && b[i] == quote ? i : nil
    }

    /// `"…"` with `""`; returns the offset after the closing quote.
    private static func skipQuotedIdentifier(_ b: [UInt8], from start: Int) throws(Problem) -> Int {
        var i = start
        while true {
            guard i < b.count else { throw Problem(message: "has an unclosed quoted identifier (\")") }
            if b[i] == doubleQuote {
                if i + 1 < b.count, b[i + 1] == doubleQuote {
                    i += 2
                    continue
                }
                return i + 1
            }
            i += 1
        }
    }

    /// At a `$` outside any token: a parameter (`$1`), a dollar-quoted string (`$$…$$`,
    /// `$tag$…$tag$`), or a lone `$`. Returns the offset after it.
    private static func skipDollar(_ b: [UInt8], at start: Int, reading: inout Reading) throws(Problem) -> Int {
        let n = b.count
        var j = start + 1
        if j < n, isDigit(b[j]) {
            reading.marks.append(Mark(kind: .parameter, offset: start))
            while j < n, isDigit(b[j]) { j += 1 }
            return j
        }
        if j < n, isIdentStart(b[j]) {
            j += 1
            while j < n, isTagContinue(b[j]) { j += 1 }
        }
        guard j < n, b[j] == dollar else {
            return start + 1  // `dolqfailed` or a lone `$`: the rest is read again as a word
        }
        let tag = Array(b[start...j])
        var k = j + 1
        while k + tag.count <= n {
            if b[k] == dollar, Array(b[k..<(k + tag.count)]) == tag { return k + tag.count }
            k += 1
        }
        throw Problem(message: "has an unclosed dollar-quoted string (\(String(decoding: tag, as: UTF8.self)))")
    }

    /// `{integer}`, `{decimal}`, `{real}`: digits, a fraction, an exponent. Letters after a number
    /// start a new word, as in PostgreSQL before 15 (15 and later refuse them).
    private static func skipNumber(_ b: [UInt8], from start: Int) -> Int {
        let n = b.count
        var i = start
        while i < n, isDigit(b[i]) { i += 1 }
        if i < n, b[i] == UInt8(ascii: "."), !(i + 1 < n && b[i + 1] == UInt8(ascii: ".")) {
            i += 1
            while i < n, isDigit(b[i]) { i += 1 }
        }
        if i < n, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            var j = i + 1
            if j < n, b[j] == UInt8(ascii: "+") || b[j] == UInt8(ascii: "-") { j += 1 }
            if j < n, isDigit(b[j]) {
                while j < n, isDigit(b[j]) { j += 1 }
                i = j
            }
        }
        return i
    }

    /// A word at a token start: a string with a prefix (`E'`, `B'`, `X'`, `N'`, `U&'`), a
    /// Unicode quoted identifier (`U&"`), or an identifier, which takes every identifier
    /// character including `$`.
    private static func skipWord(_ b: [UInt8], at start: Int, standardConformingStrings: Bool) throws(Problem) -> Int {
        let n = b.count
        let lower = b[start] | 0x20
        if start + 1 < n, b[start + 1] == quote {
            switch lower {
            case UInt8(ascii: "e"): return try skipString(b, from: start + 2, kind: .escaped)
            case UInt8(ascii: "b"), UInt8(ascii: "x"): return try skipString(b, from: start + 2, kind: .bits)
            case UInt8(ascii: "n"): return try skipString(b, from: start + 2, kind: standardConformingStrings ? .standard : .escaped)
            default: break
            }
        }
        if lower == UInt8(ascii: "u"), start + 2 < n, b[start + 1] == UInt8(ascii: "&") {
            if b[start + 2] == quote { return try skipString(b, from: start + 3, kind: .standard) }
            if b[start + 2] == doubleQuote { return try skipQuotedIdentifier(b, from: start + 3) }
        }
        var i = start + 1
        while i < n, isIdentContinue(b[i]) { i += 1 }
        return i
    }
}

import Foundation
