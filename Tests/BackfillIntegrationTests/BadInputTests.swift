import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// Every bad input exits 2 with a message naming the file, the field and the fix, and changes no row.
@Suite("Bad input: exit 2, a useful message, nothing changed")
struct BadInputTests {
    static let cases: [(label: String, yaml: String, expected: [String])] = [
        ("malformed YAML", "name: x\ntable: items\nkey: [id]\nset:\n  filled: 1\n bad: indent\n", ["not valid YAML", ":6"]),
        ("misspelt field", "name: x\ntable: items\nkey: [id]\nset: {filled: 1}\nbatch: {target_msec: 10}\n", ["batch.target_msec", "did you mean `target_ms`"]),
        ("missing required field", "name: x\nkey: [id]\nset: {filled: 1}\n", ["field `table`", "required"]),
        ("wrong type", "name: x\ntable: items\nkey: [id]\nset: {filled: 1}\ntimeouts: {lock_ms: fast}\n", ["timeouts.lock_ms", "whole number"]),
        ("out of range", "name: x\ntable: items\nkey: [id]\nset: {filled: 1}\nretry: {max_attempts: 0}\n", ["retry.max_attempts", "out of range"]),
        ("table missing", "name: x\ntable: public.itemz\nkey: [id]\nset: {filled: 1}\n", ["field `table`", "does not exist"]),
        ("key column missing", "name: x\ntable: items\nkey: [ident]\nset: {filled: 1}\n", ["field `key`", "`ident` does not exist", "did you mean `id`"]),
        ("set column missing", "name: x\ntable: items\nkey: [id]\nset: {filed: 1}\n", ["set.filed", "did you mean `filled`"]),
        ("key not unique", "name: x\ntable: items\nkey: [payload]\nset: {filled: 1}\n", ["field `key`", "no unique btree index", "CREATE UNIQUE INDEX"]),
        ("key nullable", "name: x\ntable: items\nkey: [filled]\nset: {writes: 1}\n", ["field `key`", "can be NULL"]),
        ("key in wrong order", "name: x\ntable: pairs\nkey: [b, a]\nset: {v: 1}\n", ["field `key`", "pairs_pkey (a, b)"]),
        ("empty set", "name: x\ntable: items\nkey: [id]\nset: {}\n", ["field `set`", "empty"]),
        ("where does not parse", "name: x\ntable: items\nkey: [id]\nwhere: filled IS NUL\nset: {filled: 1}\n", ["field `where`", "syntax error"]),
        ("set does not type-check", "name: x\ntable: items\nkey: [id]\nset: {filled: now()}\n", ["set.filled", "bigint"]),
        ("where escapes its parentheses", "name: x\ntable: items\nkey: [id]\nwhere: 1=1) OR (true\nset: {filled: 1}\n", ["field `where`", "parenthesis"]),
        ("sql references a missing table", "name: x\ntable: items\nkey: [id]\nsql: UPDATE nowhere SET a = 1 FROM batch\n", ["field `sql`", "does not exist"]),
        ("set changes the key", "name: x\ntable: items\nkey: [id]\nset: {id: id + 1}\n", ["set.id", "key column"]),
    ]

    @Test("bad job files", arguments: cases.indices)
    func badJobFile(index: Int) throws {
        let c = Self.cases[index]
        let (url, db) = try itemsDatabase("bad\(index)", rows: 2_000)
        try db.execute("CREATE TABLE pairs (a int, b int, v int, PRIMARY KEY (a, b)); INSERT INTO pairs SELECT g, g, 0 FROM generate_series(1, 10) g;")
        let before = try checksum(db)
        let path = try jobFile(c.yaml)
        let run = try backfill(["run", path, "--database", url])
        #expect(run.code == 2, "\(c.label): \(run.err)")
        #expect(run.err.contains(path), "\(c.label): \(run.err)")
        #expect(run.err.contains("fix:"), "\(c.label): \(run.err)")
        for text in c.expected { #expect(run.err.contains(text), "\(c.label): expected `\(text)` in \(run.err)") }
        #expect(try checksum(db) == before, "\(c.label) changed rows")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true, "the checkpoint store was created")
    }

    @Test("bad flags and files exit 2", arguments: [
        (["run", "--max-runtime", "soon", "jobs/demo.yaml"], "max-runtime"),
        (["run", "--max-runtime", "3", "jobs/demo.yaml"], "`3` has no unit"),
        (["run"], "<files>"),
        (["run", "/nonexistent/job.yaml"], "does not exist"),
        (["status", "--format", "xml"], "format"),
        (["run", "jobs/demo.yaml", "--log-format", "yaml"], "log-format"),
    ])
    func badFlags(arguments: [String], expected: String) throws {
        let run = try backfill(arguments)
        #expect(run.code == 2, "\(run.err)")
        #expect(run.err.contains(expected), "\(run.err)")
    }

    @Test("the password never appears in output")
    func passwordHidden() throws {
        let run = try backfill(["run", packageRoot + "/jobs/demo.yaml", "--database", "postgresql://app:Top-Secret-77@127.0.0.1:9/app"])
        #expect(run.code == 1)
        #expect(run.err.contains("127.0.0.1"))
        #expect(!run.err.contains("Top-Secret-77"))
        #expect(!run.out.contains("Top-Secret-77"))
    }

    private func checksum(_ db: Connection) throws -> String {
        try db.query("SELECT md5(string_agg(t::text, ',' ORDER BY id)) AS h FROM items t").first?["h"].string ?? ""
            + (try db.query("SELECT md5(string_agg(p::text, ',' ORDER BY a)) AS h FROM pairs p").first?["h"].string ?? "")
    }
}
