import PostgresClient
import Testing

/// The SQL builder, without a database: placeholders numbered by the builder, values beside the
/// text and never in it, identifiers quoted, composed SQL renumbered.
@Suite("SQL builder")
struct SQLTests {
    @Test("each bound value gets the next placeholder, in the order of the text; casts stay in the text")
    func numbering() {
        let sql: SQL = "UPDATE t SET v = \(bind: "{}")::jsonb, n = n + \(bind: 3) WHERE job = \(bind: "j") AND seen = \(bind: .bool(true))"
        #expect(sql.text == "UPDATE t SET v = $1::jsonb, n = n + $2 WHERE job = $3 AND seen = $4")
        #expect(sql.values == [.text("{}"), .int(3), .text("j"), .bool(true)])
        #expect(sql.slots.isEmpty)
    }

    @Test("a value never reaches the text, whatever it holds")
    func valuesNotInlined() {
        let hostile = "x'); DROP TABLE t; --"
        let sql: SQL = "SELECT \(bind: hostile), \(bind: .null), \(bind: Int64.max)"
        #expect(sql.text == "SELECT $1, $2, $3")
        #expect(!sql.text.contains("DROP"))
        #expect(sql.values == [.text(hostile), .null, .int(Int64.max)])
        let statement = Connection.Statement(sql, prepared: true)
        #expect(statement.sql == "SELECT $1, $2, $3" && statement.parameters == sql.values && statement.prepared)
    }

    @Test("identifiers are quoted, their quotes doubled; unescaped text goes in as it is")
    func identifiers() {
        let sql: SQL = "SELECT \(identifier: #"a"b"#), \(identifier: "Line ID") FROM \(qualified: ["my schema", "T"]) WHERE \(unescaped: "v IS NULL")"
        #expect(sql.text == #"SELECT "a""b", "Line ID" FROM "my schema"."T" WHERE v IS NULL"#)
        #expect(sql.parameters.isEmpty)
        // `$1` written as text is text: only the builder makes placeholders.
        #expect(SQL(unescaped: "SELECT '$1'").parameters.isEmpty)
    }

    @Test("SQL appended into SQL is renumbered after what comes before it, the values kept in order")
    func compositionRenumbers() {
        let checkpoint: SQL = "UPDATE r SET last = \(bind: "k")::jsonb, worker = \(bind: "w")"
        let journal: SQL = "INSERT INTO j SELECT \(bind: "job")"
        #expect(checkpoint.text == "UPDATE r SET last = $1::jsonb, worker = $2")
        let batch: SQL = "WITH changed AS (DELETE FROM t WHERE id > \(bind: 10) AND id <= \(bind: 20)), checkpoint AS (\(checkpoint)), journal AS (\(journal)) SELECT 1"
        #expect(batch.text == "WITH changed AS (DELETE FROM t WHERE id > $1 AND id <= $2), checkpoint AS (UPDATE r SET last = $3::jsonb, worker = $4), journal AS (INSERT INTO j SELECT $5) SELECT 1")
        #expect(batch.values == [.int(10), .int(20), .text("k"), .text("w"), .text("job")])
        // The parts are unchanged.
        #expect(checkpoint.text == "UPDATE r SET last = $1::jsonb, worker = $2")
        // `+`, `+=` and `joined` renumber the same way.
        let calls: [SQL] = [("a", "1"), ("b", "2")].map { "set_config(\(bind: $0.0), \(bind: $0.1), false)" }
        var select: SQL = "SELECT \(bind: 7)::int, "
        select += calls.joined(separator: ", ")
        #expect(select.text == "SELECT $1::int, set_config($2, $3, false), set_config($4, $5, false)")
        #expect(select.values == [.int(7), .text("a"), .text("1"), .text("b"), .text("2")])
        #expect((("x = \(bind: 1)" as SQL) + " AND y = \(bind: 2)").text == "x = $1 AND y = $2")
    }

    @Test("a slot is one placeholder wherever it is used, also across composition, and keeps it when bound")
    func slots() {
        let lower = SQL.Slot("lower"), upper = SQL.Slot("upper")
        let range: SQL = "id > \(lower)::bigint AND id <= \(upper)::bigint"
        let statement: SQL = "UPDATE t SET v = \(bind: "x") WHERE \(range) RETURNING NOT (\(range)) AS outside"
        #expect(statement.text == "UPDATE t SET v = $1 WHERE id > $2::bigint AND id <= $3::bigint RETURNING NOT (id > $2::bigint AND id <= $3::bigint) AS outside")
        #expect(statement.slots == [lower, upper])
        let bound = statement.binding([lower: .text("100"), upper: .text("200")])
        #expect(bound.text == statement.text)
        #expect(bound.values == [.text("x"), .text("100"), .text("200")])
        #expect(bound.slots.isEmpty)
        // Bound per use: the same template, other values, the same text.
        let again = statement.binding([lower, upper], to: [.text("200"), .text("300")])
        #expect(again.text == statement.text && again.values == [.text("x"), .text("200"), .text("300")])
        // A slot bound before composition is a value of its own, not merged with a later slot.
        let job = SQL.Slot("job")
        let journal = ("SELECT \(job), (SELECT pass FROM jobs WHERE name = \(job))" as SQL).binding(job, to: .text("j"))
        let composed: SQL = "WITH a AS (SELECT \(job)), b AS (\(journal)) SELECT 1"
        #expect(composed.text == "WITH a AS (SELECT $1), b AS (SELECT $2, (SELECT pass FROM jobs WHERE name = $2)) SELECT 1")
        #expect(composed.slots == [job])
        #expect(composed.binding(job, to: .text("other")).values == [.text("other"), .text("j")])
    }

    @Test("declared slots take the first placeholders in the declared order, whatever order the text uses them in")
    func declaredOrder() {
        let keys = SQL.Slot.list("lower", count: 2), offset = SQL.Slot("offset")
        #expect(keys == [SQL.Slot("lower", 0), SQL.Slot("lower", 1)])
        var sql = SQL(declaring: keys + [offset])
        sql += "SELECT \(offset)::bigint + 1 FROM t WHERE (a, b) > (\(keys[0])::int, \(keys[1])::text) OFFSET \(offset)"
        #expect(sql.text == "SELECT $3::bigint + 1 FROM t WHERE (a, b) > ($1::int, $2::text) OFFSET $3")
        #expect(sql.binding(keys + [offset], to: [.text("1"), .text("a"), .int(9)]).values == [.text("1"), .text("a"), .int(9)])
    }

    @Test("SQL from a literal is its text, with no parameters; equal SQL is equal text and parameters")
    func literals() {
        let plain: SQL = "COMMIT"
        #expect(plain.text == "COMMIT" && plain.parameters.isEmpty && plain.description == "COMMIT")
        #expect(plain == SQL(unescaped: "COMMIT"))
        #expect(("a = \(bind: 1)" as SQL) != ("a = \(bind: 2)" as SQL))
        #expect(("a = \(bind: 1)" as SQL) == ("a = \(bind: 1)" as SQL))
    }
}
