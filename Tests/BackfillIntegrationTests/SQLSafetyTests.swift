import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import PropertyBased
import Testing

/// Job SQL cannot escape its place, `plan` changes nothing, and no password is ever printed.
@Suite("SQL safety: hostile job files, the plan guard, secrets")
struct SQLSafetyTests {
    /// Hostile job files: each must be refused (exit 2) by every command, leaving the table's rows
    /// and the catalog as they were.
    static let hostile: [(label: String, yaml: String)] = [
        ("plan that dropped a table (COMMIT inside the proving transaction)",
         "name: h\ntable: items\nkey: [id]\nwhere: 'EXISTS(SELECT 1 AS _$a$)); COMMIT; DROP TABLE items; SELECT ((SELECT true AS _$a$)'\nset: {touched: 1}\n"),
        ("_$a$ read as an identifier, not a dollar quote",
         "name: h\ntable: items\nkey: [id]\nwhere: 'EXISTS(SELECT 1 AS _$a$)) OR ((SELECT true AS _$a$)'\nset: {touched: 1}\n"),
        ("E'' string whose \\' hides a closing parenthesis",
         "name: h\ntable: items\nkey: [id]\nwhere: \"id = 0 AND payload = E'\\\\'' ) OR (true OR payload = E'\\\\''\"\nset: {touched: 1}\n"),
        ("-- comment ended by a carriage return",
         "name: h\ntable: items\nkey: [id]\nwhere: \"id = 0 --\\r) OR (true\"\nset: {touched: 1}\n"),
        ("NUL in a set expression", "name: h\ntable: items\nkey: [id]\nset: {touched: \"1\\0\"}\n"),
        ("zero-width space in the table name", "name: h\ntable: \"items\\u200B\"\nkey: [id]\nset: {touched: 1}\n"),
        ("statement separator in set", "name: h\ntable: items\nkey: [id]\nset: {touched: '1; DROP TABLE items'}\n"),
        ("top-level OR in where, escaping the range", "name: h\ntable: items\nkey: [id]\nwhere: 'true) OR (true'\nset: {touched: 1}\n"),
        ("sql that ignores batch", "name: h\ntable: items\nkey: [id]\nsql: UPDATE items SET touched = 1\n"),
        ("sql that reads batch but changes every row", "name: h\ntable: items\nkey: [id]\nsql: UPDATE items SET touched = 1 WHERE EXISTS (SELECT 1 FROM batch)\n"),
        ("sql with a second statement", "name: h\ntable: items\nkey: [id]\nsql: 'UPDATE items SET touched = 1 FROM batch WHERE items.id = batch.id; DROP TABLE items'\n"),
        ("check_sql that commits", "name: h\ntable: items\nkey: [id]\nset: {touched: 1}\nthrottle: {check_sql: 'true); COMMIT; DROP TABLE items; SELECT (true'}\n"),
        ("key that closes its quote", "name: h\ntable: items\nkey: ['id\"); DROP TABLE items; --']\nset: {touched: 1}\n"),
        ("table name with a statement", "name: h\ntable: 'items; DROP TABLE items'\nkey: [id]\nset: {touched: 1}\n"),
        ("parameter reference", "name: h\ntable: items\nkey: [id]\nwhere: id > $1 OR true\nset: {touched: 1}\n"),
        ("backslash before a quote, read two ways", "name: h\ntable: items\nkey: [id]\nwhere: \"payload = 'a\\\\' OR true OR payload = '\"\nset: {touched: 1}\n"),
    ]

    @Test("hostile job files: plan, verify, run and rehearse --dry-run refuse them and change nothing", arguments: hostile.indices)
    func hostileFiles(index: Int) throws {
        let c = Self.hostile[index]
        let (url, db) = try itemsDatabase("hostile\(index)", rows: 3_000)
        let before = try snapshot(db)
        let path = try jobFile(c.yaml)
        for command in [["plan", path], ["verify", path], ["run", path], ["rehearse", path, "--dry-run", "--baseline", "1s", "--clients", "1"]] {
            let result = try backfill(command + ["--database", url])
            #expect(result.code == 2, "\(c.label): `\(command[0])` exited \(result.code): \(result.err)")
            #expect(result.err.contains("fix:") || result.err.contains("Error:"), "\(c.label): \(result.err)")
            #expect(try snapshot(db) == before, "\(c.label): `\(command[0])` changed the database")
        }
    }

    @Test("plan and verify of a valid job leave the database as they found it")
    func planChangesNothing() throws {
        let (url, db) = try itemsDatabase("planclean", rows: 5_000)
        let before = try snapshot(db)
        let path = try jobFile(itemsJob(name: "clean", extra: "where: filled IS NULL"))
        let plan = try backfill(["plan", path, "--database", url])
        #expect(plan.code == 0, "\(plan.err)")
        #expect(plan.out.contains("plan guard: Index Scan using items_pkey, both bounds in the index condition at batch.max = 50000 keys"), "\(plan.out)")
        let verify = try backfill(["verify", path, "--database", url])
        #expect(verify.code == 1, "5,000 rows still match: \(verify.out)")
        #expect(try snapshot(db) == before)
    }

    /// Generated `where` fragments mixing quotes, escapes, dollar tags, comments, parentheses,
    /// carriage returns and control characters: each is refused, or, when it runs, its batch over
    /// keys (100, 200] changes no row outside that range.
    @Test("generated fragments are refused or stay inside the key range", .timeLimit(.minutes(5)))
    func generatedFragments() async throws {
        let (url, db) = try itemsDatabase("fuzz", rows: 400)
        let pieces = [
            "id", "touched", "payload", "filled", "1", "0", "true", "NULL", "(", ")", "((", "))", " OR ", " AND ", " = ", " > ", " <= ",
            " IS NULL", "'", "''", "'a'", "'x)'", "\\", "\\'", "E'", "E'\\''", "e'\\\\'", "U&'", "U&\"", "B'", "N'", "$$", "$a$", "_$a$",
            "$_$", "$1", "--", "-- c\n", "\r", "\n", "/*", "*/", "/* ) */", "/* /* */", "\"", "\"id\"", "\"\"", ";", " COMMIT",
            " DROP TABLE items", "SELECT ", "EXISTS(SELECT 1)", "\t", "\u{0}", "\u{200B}", "\u{1B}", " ", "x$", "1e", ".5",
        ]
        // Clauses that are valid SQL but hard to lex: a fragment joins some of them, then gets
        // hostile pieces spliced in at random places (or is made of pieces alone).
        let clauses = [
            "id > 150", "filled IS NULL", "(id % 2 = 0)", "\"id\" >= 0", "payload <> 'x)'", "payload <> E'it\\'s ) '",
            "payload <> $q$ ) ; $q$", "payload <> $$)$$", "payload <> 'a' -- ) comment\n", "/* ) ; /* nested */ */ true",
            "payload <> U&'\\0041)'", "payload <> 'multi\n)line'", "payload LIKE 'a\\_%'", "payload <> 'x'\n')'",
            "payload <> B'1'::text", "payload <> N'n)'", "touched <> 1.5e3", "payload <> e'\\\\'",
        ]
        let refused = Counter(), ran = Counter()
        await propertyCheck(
            count: 2_000, input: Gen.element(of: clauses).array(of: 0...4), Gen.element(of: pieces).array(of: 0...3), Gen.int(in: 0...1000)
        ) { chosen, inserted, seed in
            var fragment = chosen.compactMap { $0 }.joined(separator: seed % 2 == 0 ? " AND " : " OR ")
            for (i, piece) in inserted.compactMap({ $0 }).enumerated() {
                let at = fragment.index(fragment.startIndex, offsetBy: (seed * (i + 7)) % (fragment.count + 1))
                fragment.insert(contentsOf: piece, at: at)
            }
            guard !fragment.isEmpty else { return }
            let yaml = "name: f\ntable: items\nkey: [id]\nwhere: \(Self.yamlQuoted(fragment))\nset: {touched: touched + 1}\n"
            let spec: JobSpec
            let plan: JobPlan
            do {
                spec = try JobSpec.parse(yaml: yaml, file: "fuzz.yaml")
                plan = try Planner.plan(spec, on: db)
            } catch is JobFileError {
                refused.add()
                return
            } catch {
                Issue.record("\(fragment.debugDescription): not a clear refusal: \(error)")
                return
            }
            do {
                try db.execute((["BEGIN"] + plan.batchSettings.map { "SET LOCAL \($0)" }).joined(separator: "; "))
                defer { try? db.execute("ROLLBACK") }
                let result = try db.query(plan.statements.batch(after: ["100"], upTo: ["200"]))
                let outside = try db.query("SELECT count(*) AS n FROM items WHERE touched > 0 AND NOT (id > 100 AND id <= 200)").first?["n"].int64
                #expect(outside == 0, "\(fragment.debugDescription) changed rows outside its key range")
                #expect(plan.statements.changed(by: result).outside == 0)
                ran.add()
            } catch let error as PostgresError {
                // A runtime error (a bad cast, division by zero) rolls the batch back: nothing changed.
                #expect(!error.isConnectionLost, "\(fragment.debugDescription): \(error)")
            }
        }
        _ = url
        print("generated fragments: \(refused.value) refused, \(ran.value) ran")
        #expect(refused.value + ran.value >= 1_800, "refused \(refused.value), ran \(ran.value)")
        #expect(ran.value >= 200, "too few generated fragments were valid SQL: the run-time half is barely tested")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE touched <> 0").first?["n"].int64 == 0)
    }

    @Test("an escape that got past every check would still be caught: the batch counts rows outside its range")
    func rangeDefence() throws {
        let (_, db) = try itemsDatabase("defence", rows: 1_000)
        // Built by hand, past the job file's checks: the text a scanner bug would let through.
        let spec = JobSpec(name: "d", table: "items", key: ["id"], whereClause: "true) OR (true", action: .update([.init(column: "touched", expression: "1")]))
        let statements = BatchStatements(spec: spec, key: [KeyColumn(name: "id", type: "bigint")])
        try db.execute("BEGIN")
        defer { try? db.execute("ROLLBACK") }
        let changed = statements.changed(by: try db.query(statements.batch(after: ["100"], upTo: ["200"])))
        #expect(changed.rows == 1_000)
        #expect(changed.outside == 900)
    }

    @Test("a sql action does not overwrite an application's write that lands during the batch")
    func sqlRechecksConcurrentWrites() throws {
        let (url, db) = try itemsDatabase("sqlrace", rows: 2_000)
        try expectSQLActionKeepsApplicationWrite(url: url, db: db)
    }

    @Test("the key's index must serve the walk: DESC, another collation or operator class is refused", arguments: [
        ("CREATE UNIQUE INDEX k_desc ON keyed (k DESC)", "is DESC"),
        ("CREATE UNIQUE INDEX k_c ON keyed (k COLLATE \"POSIX\")", "collation"),
        ("CREATE UNIQUE INDEX k_pattern ON keyed (k text_pattern_ops)", "text_pattern_ops"),
    ])
    func unusableIndexes(ddl: String, expected: String) throws {
        let url = try TestDatabases.create("index\(abs(ddl.hashValue % 100_000))")
        let db = try Connection(url)
        try db.execute("CREATE TABLE keyed (k text NOT NULL, v int); INSERT INTO keyed SELECT 'k' || g, 0 FROM generate_series(1, 100) g; \(ddl)")
        let result = try backfill(["plan", try jobFile("name: i\ntable: keyed\nkey: [k]\nset: {v: 1}\n"), "--database", url])
        #expect(result.code == 2, "\(result.err)")
        #expect(result.err.contains(expected), "\(result.err)")
        #expect(result.err.contains("CREATE UNIQUE INDEX CONCURRENTLY"), "\(result.err)")
    }

    @Test("names fold as PostgreSQL folds them; quoted and spaced column names work; inheritance children are refused")
    func names() throws {
        let url = try TestDatabases.create("names")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE "Lines" ("Line ID" bigint PRIMARY KEY, "Total" int, note text);
            INSERT INTO "Lines" SELECT g, NULL, 'n' FROM generate_series(1, 500) g;
            CREATE TABLE parent (id bigint PRIMARY KEY, v int); CREATE TABLE child () INHERITS (parent);
            """)
        for key in ["'\"Line ID\"'", "Line ID"] {
            let run = try backfill(["run", try jobFile("name: n\ntable: '\"Lines\"'\nkey: [\(key)]\nset: {'\"Total\"': 1, NOTE: \"'m'\"}\n"), "--database", url, "--restart"])
            #expect(run.code == 0, "key \(key): \(run.err)")
        }
        #expect(try db.query("SELECT count(*) AS n FROM \"Lines\" WHERE \"Total\" = 1 AND note = 'm'").first?["n"].int64 == 500)
        let unquoted = try backfill(["plan", try jobFile("name: n\ntable: '\"Lines\"'\nkey: ['\"Line ID\"']\nset: {Total: 1}\n"), "--database", url])
        #expect(unquoted.code == 2)
        #expect(unquoted.err.contains("column `total` does not exist") && unquoted.err.contains("'\"Total\"'"), "\(unquoted.err)")
        let inherited = try backfill(["plan", try jobFile("name: p\ntable: parent\nkey: [id]\nset: {v: 1}\n"), "--database", url])
        #expect(inherited.code == 2)
        #expect(inherited.err.contains("inheritance children"), "\(inherited.err)")
    }

    @Test("a malformed connection string never prints its password, on any command", arguments: [
        "postgresql://bob:S3cr%zzEt@127.0.0.1/db", "postgresql+psycopg2://bob:S3crEt@127.0.0.1/db",
        "postgresql://bob:S3crEt", "host=127.0.0.1 password=S3crEt port=S3crEt",
    ])
    func malformedURLs(url: String) throws {
        let job = packageRoot + "/jobs/demo.yaml"
        for command in [["run", job], ["plan", job], ["verify", job], ["status"], ["pause", "x"], ["resume", "x"], ["cancel", "x"], ["rehearse", job, "--dry-run"]] {
            let result = try backfill(command + ["--database", url])
            #expect(result.code == 2, "\(command[0]): \(result.err)")
            #expect(!(result.err + result.out).contains("S3cr"), "\(command[0]) printed the password: \(result.err)")
            #expect(result.err.contains("connection string"), "\(command[0]): \(result.err)")
        }
        let environment = try CLIProcess(["status"], environment: ["DATABASE_URL": url])
        #expect(environment.wait() == 2)
        #expect(!environment.stderr.contains("S3cr") && environment.stderr.contains("DATABASE_URL"), "\(environment.stderr)")
    }

    @Test("passwords are scrubbed from any message")
    func scrub() {
        #expect(ConnectionInfo.scrub("could not connect to postgresql://bob:S3crEt@db:5432/app") == "could not connect to postgresql://bob:********@db:5432/app")
        #expect(ConnectionInfo.scrub("dbname=app password='a b\\'c' host=x") == "dbname=app password=******** host=x")
        #expect(ConnectionInfo.scrub("PASSWORD = S3crEt") == "PASSWORD = ********")
        #expect(ConnectionInfo.scrub("no secrets here") == "no secrets here")
    }

    /// The table's rows and the catalog's relations, to compare before and after.
    private func snapshot(_ db: Connection) throws -> String {
        let rows = try db.query("SELECT md5(string_agg(t::text, ',' ORDER BY id)) AS h FROM items t").first?["h"].string ?? "no table"
        let catalog = try db.query("SELECT md5(string_agg(oid::text || ':' || relname || ':' || relkind::text, ',' ORDER BY oid)) AS h FROM pg_class").first?["h"].string ?? ""
        let schemas = try db.query("SELECT string_agg(nspname, ',' ORDER BY nspname) AS s FROM pg_namespace").first?["s"].string ?? ""
        return rows + "/" + catalog + "/" + schemas
    }

    /// A YAML double-quoted scalar holding exactly `text`: a JSON string is one.
    static func yamlQuoted(_ text: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        return String(decoding: (try? encoder.encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}

/// A count shared with a property check's closure.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

import Synchronization
