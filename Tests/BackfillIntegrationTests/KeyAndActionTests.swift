import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// Runs a job in-process to its outcome.
func runJob(_ yaml: String, url: String, restart: Bool = false) throws -> (RunOutcome, [RunEvent]) {
    let spec = try JobSpec.parse(yaml: yaml, file: "inline.yaml")
    var options = RunOptions(database: url)
    options.restart = restart
    let log = EventLog()
    let outcome = Runner(spec: spec, options: options) { log.append($0) }.run()
    return (outcome, log.events)
}

@Suite("Key types, actions and edge cases")
struct KeyAndActionTests {
    @Test("composite text + int key: every row once, in small batches")
    func textIntKey() throws {
        let url = try TestDatabases.create("textint")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE t (tenant text NOT NULL, n int NOT NULL, v int, writes int NOT NULL DEFAULT 0, PRIMARY KEY (tenant, n));
            INSERT INTO t (tenant, n) SELECT 'tenant-' || (g % 37) || ' ü', g FROM generate_series(1, 20000) g;
            """)
        let (outcome, events) = try runJob("name: ti\ntable: t\nkey: [tenant, n]\nset: {v: n * 3, writes: writes + 1}\nbatch: {size: 300, max: 700}", url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(events.filter { $0.kind == .batch }.count >= 20000 / 700)
        let row = try db.query("SELECT count(*) FILTER (WHERE writes = 1 AND v = n * 3) AS ok, count(*) AS n FROM t").first
        #expect(row?["ok"].int64 == 20000 && row?["n"].int64 == 20000)
    }

    @Test("a key column named like an output alias (k0) still walks the index, never a sort")
    func aliasNamedKey() throws {
        let url = try TestDatabases.create("k0key")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE t (k0 int PRIMARY KEY, v int, writes int NOT NULL DEFAULT 0);
            INSERT INTO t (k0) SELECT g FROM generate_series(1, 30000) g; ANALYZE t;
            """)
        let yaml = "name: k\ntable: t\nkey: [k0]\nset: {v: 1, writes: writes + 1}"
        let plan = try Planner.plan(try JobSpec.parse(yaml: yaml, file: "k.yaml"), on: db)
        let upper = try db.query("EXPLAIN \(plan.statements.upperBound(after: ["100"], below: nil, offset: 999))" as SQL).rows.compactMap { $0[0].string }.joined(separator: "\n")
        #expect(upper.contains("Index Only Scan") && !upper.contains("Sort"), "\(upper)")
        let (outcome, _) = try runJob(yaml, url: url)
        #expect(outcome.exitCode == 0)
        #expect(try db.query("SELECT count(*) AS n FROM t WHERE writes = 1").first?["n"].int64 == 30000)
    }

    @Test("an integer key walked by span: gaps wider than a batch, negative keys, both ends of bigint and of integer; every row once, no batch over B keys")
    func integerKeySpans() throws {
        let url = try TestDatabases.create("spans")
        let db = try Connection(url)
        for (type, top) in [("bigint", "9223372036854775807"), ("integer", "2147483647")] {
            try db.execute("""
                DROP TABLE IF EXISTS t;
                CREATE TABLE t (id \(type) PRIMARY KEY, v int, tx bigint, writes int NOT NULL DEFAULT 0);
                INSERT INTO t (id) SELECT g FROM generate_series(-3000, -1) g;                  -- dense, negative
                INSERT INTO t (id) SELECT g FROM generate_series(1, 6000) g;                    -- dense
                INSERT INTO t (id) SELECT g FROM generate_series(1000000, 1040000, 7) g;        -- a gap of a million, then sparse
                INSERT INTO t (id) SELECT g FROM generate_series(1500000, 1504000) g;           -- dense again
                INSERT INTO t (id) SELECT \(top) - g FROM generate_series(0, 2500) g;            -- the type's last keys
                ANALYZE t;
                """)
            let rows = try db.query("SELECT count(*) AS n FROM t").first?["n"].int64 ?? 0
            let (outcome, events) = try runJob(
                "name: spans-\(type)\ntable: t\nkey: [id]\nset: {v: 1, tx: txid_current(), writes: writes + 1}\nbatch: {size: 500, min: 500, max: 500}", url: url, restart: true)
            #expect(outcome.exitCode == 0, "\(type): \(outcome)")
            let batches = events.filter { $0.kind == .batch }
            let bounds = Dictionary(grouping: batches.compactMap { event -> String? in
                if case .string(let bound) = event["bound"] { return bound }
                return nil
            }) { $0 }.mapValues(\.count)
            // Dense stretches take the span; the first batch, every 16th and those after a gap count.
            #expect((bounds["span"] ?? 0) > (bounds["counted"] ?? 0), "\(type): \(bounds)")
            #expect((bounds["counted"] ?? 0) >= 4, "\(type): \(bounds)")
            let check = try db.query("SELECT count(*) FILTER (WHERE writes = 1 AND v = 1) AS once, count(*) AS n FROM t").first
            #expect(check?["once"].int64 == rows && check?["n"].int64 == rows, "\(type)")
            // Each batch is one transaction: none changed more rows than its 500 keys.
            let most = try db.query("SELECT max(n) AS m FROM (SELECT count(*) AS n FROM t GROUP BY tx) x").first?["m"].int64 ?? 0
            #expect(most <= 500 && most > 0, "\(type): \(most) rows in one batch")
        }
    }

    @Test("uuid key")
    func uuidKey() throws {
        let url = try TestDatabases.create("uuid")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE t (id uuid PRIMARY KEY, v int, writes int NOT NULL DEFAULT 0);
            INSERT INTO t (id) SELECT md5(g::text)::uuid FROM generate_series(1, 15000) g;
            """)
        let (outcome, _) = try runJob("name: u\ntable: t\nkey: [id]\nwhere: v IS NULL\nset: {v: 1, writes: writes + 1}\nbatch: {size: 1000}", url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(try db.query("SELECT count(*) AS n FROM t WHERE writes = 1 AND v = 1").first?["n"].int64 == 15000)
    }

    @Test("timestamp + bigint key, with equal timestamps across batch borders")
    func timestampKey() throws {
        let url = try TestDatabases.create("tskey")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE t (created_at timestamptz NOT NULL, id bigint NOT NULL, v int, writes int NOT NULL DEFAULT 0);
            CREATE UNIQUE INDEX t_created_id ON t (created_at, id);
            INSERT INTO t (created_at, id) SELECT timestamptz '2026-01-01 00:00:00.123456+00' + (g / 50) * interval '1.000001 second', g FROM generate_series(1, 12000) g;
            """)
        let (outcome, _) = try runJob("name: ts\ntable: t\nkey: [created_at, id]\nset: {v: 1, writes: writes + 1}\nbatch: {size: 120, min: 10, max: 120}", url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(try db.query("SELECT count(*) AS n FROM t WHERE writes = 1").first?["n"].int64 == 12000)
    }

    @Test("batched delete removes exactly the rows matching where")
    func delete() throws {
        let (url, db) = try itemsDatabase("delete", rows: 30000)
        let (outcome, _) = try runJob("name: d\ntable: items\nkey: [id]\naction: delete\nwhere: id % 3 = 0\nbatch: {size: 2000}", url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        let row = try db.query("SELECT count(*) AS n, count(*) FILTER (WHERE id % 3 = 0) AS bad FROM items").first
        #expect(row?["n"].int64 == 20000)
        #expect(row?["bad"].int64 == 0)
        if case .done(let summary) = outcome { #expect(summary.rows == 10000) }
    }

    @Test("custom sql over the batch CTE")
    func customSQL() throws {
        let (url, db) = try itemsDatabase("customsql", rows: 10000)
        try db.execute("CREATE TABLE audit (item_id bigint PRIMARY KEY, note text)")
        let (outcome, _) = try runJob("""
            name: c
            table: items
            key: [id]
            where: id % 2 = 0
            sql: INSERT INTO audit (item_id, note) SELECT id, 'seen' FROM batch
            batch: {size: 700}
            """, url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(try db.query("SELECT count(*) AS n FROM audit").first?["n"].int64 == 5000)
    }

    @Test("an empty table is done at once; a table that grows during the run is covered to its new end")
    func emptyAndGrowing() throws {
        let (url, db) = try itemsDatabase("empty", rows: 0)
        let (empty, _) = try runJob(itemsJob(name: "e"), url: url)
        #expect(empty.exitCode == 0)
        if case .done(let summary) = empty { #expect(summary.rows == 0) }

        try db.execute("INSERT INTO items (id, payload) SELECT g, 'x' FROM generate_series(1, 5000) g")
        let spec = try JobSpec.parse(yaml: itemsJob(name: "grow") + "\nbatch: {size: 100, max: 100}", file: "g.yaml")
        let inserted = Once()
        let outcome = Runner(spec: spec, options: RunOptions(database: url)) { event in
            if event.kind == .batch, inserted.first() {
                try? Connection(url).execute("INSERT INTO items (id, payload) SELECT g, 'late' FROM generate_series(5001, 6000) g")
            }
        }.run()
        #expect(outcome.exitCode == 0)
        try expectExactlyOnce(db, rows: 6000)
    }

    @Test("a permanent error stops the job (exit 1) with the key range and SQLSTATE; committed batches stay; a fixed rerun resumes")
    func permanentError() throws {
        let (url, db) = try itemsDatabase("permanent", rows: 10000)
        try db.execute("ALTER TABLE items ADD CONSTRAINT small CHECK (filled IS NULL OR filled < 10000)")
        let (outcome, _) = try runJob(itemsJob(name: "p") + "\nbatch: {size: 1000, max: 1000}", url: url)
        #expect(outcome.exitCode == 1)
        guard case .failed(let failure, _) = outcome else { Issue.record("\(outcome)"); return }
        let message = failure.description
        #expect(failure.sqlstate == "23514" && failure.range != nil && failure.afterKey != nil)
        #expect(message.contains("23514"))
        #expect(message.contains("violates check constraint"))
        #expect(message.contains("range ") && message.contains("after key ("))
        // Committed batches stay: exactly the rows the checkpoints account for were written.
        let written = try db.query("SELECT count(*) AS n FROM items WHERE writes = 1").first?["n"].int64 ?? 0
        #expect(written == rowsDone(db, job: "p"))
        #expect(written >= 4000 && written < 10000)
        let status = try CheckpointStore().status(job: "p", db: db).first
        #expect(status?.state == .failed)
        #expect(status?.lastError?.contains("23514") == true)
        try db.execute("ALTER TABLE items DROP CONSTRAINT small")
        let (again, _) = try runJob(itemsJob(name: "p") + "\nbatch: {size: 1000, max: 1000}", url: url)
        #expect(again.exitCode == 0)
        try expectExactlyOnce(db, rows: 10000)
    }

    @Test("the job files in jobs/ run against their tables")
    func exampleJobs() throws {
        let url = try TestDatabases.create("examples")
        let db = try Connection(url)
        try DemoData.seed(rows: 20000, on: db)
        try db.execute("""
            CREATE TABLE tenant_events (tenant_id int NOT NULL, event_id bigint NOT NULL, kind text NOT NULL, kind_normalized text, updated_at timestamptz, PRIMARY KEY (tenant_id, event_id));
            INSERT INTO tenant_events (tenant_id, event_id, kind) SELECT g % 13, g, '  Signup ' FROM generate_series(1, 20000) g;
            CREATE TABLE sessions (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
            INSERT INTO sessions SELECT g, now() - (g % 60) * interval '1 day' FROM generate_series(1, 20000) g;
            CREATE TABLE orders (id bigint PRIMARY KEY, total_cents bigint);
            CREATE TABLE order_lines (order_id bigint NOT NULL, quantity int NOT NULL, price_cents bigint NOT NULL);
            INSERT INTO orders (id) SELECT g FROM generate_series(1, 5000) g;
            INSERT INTO order_lines SELECT g % 5000 + 1, 2, 150 FROM generate_series(1, 10000) g;
            CREATE INDEX ON order_lines (order_id);
            CREATE TABLE schema_migrations (version bigint PRIMARY KEY);
            """)
        let files = try FileManager.default.contentsOfDirectory(atPath: packageRoot + "/jobs").filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }
        #expect(Set(files) == ["accounts-fill-balance-cents", "events-composite-key", "sessions-purge-expired", "orders-custom-sql", "demo", "accounts-expand-fill-finalize"],
                "every example in jobs/ is run here")
        for file in ["accounts-fill-balance-cents", "events-composite-key", "sessions-purge-expired", "orders-custom-sql", "demo", "accounts-expand-fill-finalize"] {
            if file == "accounts-expand-fill-finalize" {
                // The expand migration: from now on every write to accounts must set email_lower.
                try db.execute("""
                    INSERT INTO schema_migrations VALUES (20261121);
                    ALTER TABLE accounts ADD COLUMN email_lower text;
                    ALTER TABLE accounts ADD CONSTRAINT accounts_email_lower_not_null CHECK (email_lower IS NOT NULL) NOT VALID;
                    """)
            }
            let result = try backfill(["run", "\(packageRoot)/jobs/\(file).yaml", "--database", url])
            #expect(result.code == 0, "\(file): \(result.err)")
        }
        #expect(try db.query("SELECT count(*) AS n FROM accounts WHERE balance_cents = (balance * 100)::bigint").first?["n"].int64 == 20000)
        #expect(try db.query("SELECT count(*) AS n FROM tenant_events WHERE kind_normalized = 'signup'").first?["n"].int64 == 20000)
        #expect(try db.query("SELECT count(*) AS n FROM sessions WHERE expires_at < now() - interval '30 days'").first?["n"].int64 == 0)
        // Seeded `g % 60` days ago: ages 30…59 days are past the cut-off when the job runs.
        #expect(try db.query("SELECT count(*) AS n FROM sessions").first?["n"].int64
            == (try db.query("SELECT count(*) AS n FROM generate_series(1, 20000) g WHERE g % 60 < 30").first?["n"].int64))
        #expect(try db.query("SELECT count(*) AS n FROM orders WHERE total_cents = 600").first?["n"].int64 == 5000)
        #expect(try db.query("SELECT count(*) AS n FROM accounts WHERE email_lower = lower(email)").first?["n"].int64 == 20000)
        #expect(try db.query("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'email_lower'").first?["attnotnull"].bool == true)
        #expect(try db.query("SELECT count(*) AS n FROM pg_constraint WHERE conname = 'accounts_email_lower_not_null'").first?["n"].int64 == 0)
        let demoFile = try String(contentsOfFile: packageRoot + "/jobs/demo.yaml", encoding: .utf8)
        #expect(demoFile.trimmingCharacters(in: .whitespacesAndNewlines) == DemoData.jobYAML.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test("plan prints the SQL and an index range scan; EXPLAIN shows range scans at 100, 5,000 and 100,000 on 1M rows")
    func planShape() throws {
        let url = try TestDatabases.create("explain")
        let db = try Connection(url)
        try DemoData.seed(rows: 1_000_000, on: db)
        let spec = try JobSpec.parse(yaml: DemoData.jobYAML, file: "demo.yaml")
        let plan = try Planner.plan(spec, on: db)
        for size in [100, 5_000, 100_000] {
            for skip in [0, 500_000] {
                let text = try #require(try Planner.explain(plan, size: size, skip: skip, on: db))
                #expect(text.contains("Index Scan using accounts_pkey"), "size \(size):\n\(text)")
                #expect(!text.contains("Seq Scan") && !text.contains("Hash Join"), "size \(size):\n\(text)")
            }
        }
        let printed = try backfill(["plan", packageRoot + "/jobs/demo.yaml", "--database", url])
        #expect(printed.code == 0, "\(printed.err)")
        #expect(printed.out.contains("Index Scan using accounts_pkey"))
        #expect(printed.out.contains(#"UPDATE "public"."accounts" SET "balance_cents""#))
        // The demo's bigint key: the span query too, and a backward index-only scan for it.
        #expect(printed.out.contains("by span:") && printed.out.contains(#"ORDER BY "public"."accounts"."id" DESC LIMIT 1"#), "\(printed.out)")
        let span = try #require(plan.statements.spanBound(after: ["500000"], below: nil, offset: 9_999))
        let spanPlan = try db.query("EXPLAIN \(span)" as SQL).rows.compactMap { $0[0].string }.joined(separator: "\n")
        #expect(spanPlan.contains("Index Only Scan Backward using accounts_pkey") && !spanPlan.contains("Sort"), "\(spanPlan)")
        #expect(try db.query("SELECT count(*) AS n FROM accounts WHERE balance_cents IS NOT NULL").first?["n"].int64 == 0)
    }
}
