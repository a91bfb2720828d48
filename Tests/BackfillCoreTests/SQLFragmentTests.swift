import BackfillCore
import Testing

@Suite("SQL fragments read as PostgreSQL's lexer reads them")
struct SQLFragmentTests {
    @Test("fragments that stay inside their parentheses are accepted", arguments: [
        "a = 1", "(a) = ')'", "a = $$)$$", "a = $tag$ ; ) $tag$", "a = $t$ $T$ ) $t$",
        "\"weird)col\" IS NULL", "\"we\"\"ird)\" = 1", "a = 1 -- trailing ) comment", "a /* ) */ = 1",
        "a /* nested /* ) */ still ) */ = 1", "a = E'it\\'s )'", "a = e'\\\\' AND b = ')'", "a = 'it''s )'",
        "a = U&'d\\0061t\\+000061 )'", "U&\"col)\" = 1", "a = B'1010' AND b = X'1F' AND c = b'0'", "a = N'text )'",
        "a = E'x'\n'\\')'", "a = 'x' -- c\n  ')'", "_$a$ = 1", "x$$ = 1", "a$b$c = $$)$$", "1.5e3 > a", ".5 < a",
        "price > 10 AND name LIKE 'a\\_%'", "a = 1 --", "café = 'thé )'", "a = 'line one\nline two )'",
    ])
    func accepted(text: String) {
        #expect(SQLFragment.problem(in: text) == nil, "\(text): \(SQLFragment.problem(in: text) ?? "")")
    }

    @Test("fragments that would leave their place are refused, with the reason", arguments: [
        ("1=1) OR (true", "closes a parenthesis"),
        ("a = 1; DROP TABLE t", "`;`"),
        ("(a = 1", "unclosed parenthesis"),
        ("a = 'open", "unclosed string"),
        ("a = $$open", "unclosed dollar-quoted"),
        ("a = $tag$ x $TAG$", "unclosed dollar-quoted"),
        ("a = 1 /* open /* nested */", "unclosed /* comment"),
        ("\"open = 1", "unclosed quoted identifier"),
        ("a = $1", "parameter"),
        // `_$a$` is one identifier to PostgreSQL, not a dollar quote around `)); COMMIT; …`
        ("EXISTS(SELECT 1 AS _$a$)); COMMIT; DROP TABLE accounts; SELECT ((SELECT true AS _$a$)", "`;`"),
        ("EXISTS(SELECT 1 AS _$a$)) OR ((SELECT true AS _$a$)", "closes a parenthesis"),
        // `\'` escapes the quote in E'': the first string ends after `\''`, and `)` is outside it
        ("a = E'\\'' ) OR (true OR a = E'\\''", "closes a parenthesis"),
        // a `--` comment ends at a carriage return, as at a newline
        ("a = 1 --\r) OR (true", "U+000D"),
        ("a = 'x' -- c\r\n) OR (true", "U+000D"),
        // a backslash before a quote: two readings, depending on standard_conforming_strings
        ("a = 'C:\\' || 'x'", "standard_conforming_strings"),
        ("U&'\\' ) OR (true OR a = U&'\\'", "closes a parenthesis"),
        ("a = 1\u{200B}", "U+200B"),
        ("a = 'x\u{0}'", "U+0000"),
        ("a = 1 \u{202E}", "U+202E"),
        ("a\u{00A0}= 1", "U+00A0"),
        ("a = 1\u{1B}[2K", "U+001B"),
    ])
    func refused(text: String, reason: String) {
        let problem = SQLFragment.problem(in: text)
        #expect(problem?.contains(reason) == true, "\(text.debugDescription): \(problem ?? "accepted")")
    }

    @Test("a scanner without the hidden-character check reads a carriage return as PostgreSQL does")
    func carriageReturnEndsComment() {
        #expect(SQLFragment.problem(in: "a = 1 --x\r) OR (true".replacingOccurrences(of: "\r", with: "\n")) != nil)
        #expect(SQLFragment.endsInLineComment("a = 1 -- note"))
        #expect(!SQLFragment.endsInLineComment("a = 1 -- note\n"))
        #expect(!SQLFragment.endsInLineComment("a = '-- not a comment'"))
    }

    @Test("a statement may end with one `;`, which is dropped")
    func trailingSemicolon() {
        #expect(SQLFragment.problem(in: "UPDATE t SET a = 1 FROM batch;", allowTrailingSemicolon: true) == nil)
        #expect(SQLFragment.problem(in: "UPDATE t SET a = 1; DELETE FROM t", allowTrailingSemicolon: true) != nil)
        #expect(SQLFragment.droppingTrailingSemicolon("UPDATE t SET a = ';' ; -- done") == "UPDATE t SET a = ';'")
        #expect(SQLFragment.droppingTrailingSemicolon("SELECT $$;$$") == "SELECT $$;$$")
    }
}
