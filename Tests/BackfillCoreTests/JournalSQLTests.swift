import BackfillCore
import PostgresClient
import Testing

@Suite("Journal and revert: SQL generation and the job file's `journal`")
struct JournalSQLTests {
    let key = [KeyColumn(name: "id", type: "bigint")]
    let tables = RevertTables(journal: #""backfill".journal"#, conflicts: #""backfill".revert_conflicts"#, jobs: #""backfill".jobs"#, leases: #""backfill".leases"#)

    @Test("update with a journal: the old values are read and locked by a materialized CTE of the same statement, then joined by key")
    func updateJournal() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: public.accounts\nkey: [id]\nwhere: c IS NULL\nset: {c: 'b * 2'}\njournal: true", file: "j.yaml")
        #expect(spec.journal)
        let sql = BatchStatements(spec: spec, key: key)
        let batch = sql.batch(afterKey: true, checkpoint: "UPDATE r SET n = 1", journal: "INSERT INTO jl SELECT * FROM changed")
        #expect(batch.text == #"WITH backfill_before AS MATERIALIZED (SELECT "id" AS backfill_k0, jsonb_build_object('c', "c") AS backfill_old FROM "public"."accounts" WHERE "id" > $1::bigint AND "id" <= $2::bigint AND (c IS NULL) FOR NO KEY UPDATE), "#
            + #"changed AS (UPDATE "public"."accounts" SET "c" = (b * 2) FROM backfill_before WHERE "public"."accounts"."id" = backfill_before.backfill_k0 AND "id" > $1::bigint AND "id" <= $2::bigint AND (c IS NULL) "#
            + #"RETURNING NOT ("id" > $1::bigint AND "id" <= $2::bigint) AS outside, jsonb_build_array("public"."accounts"."id"::text) AS backfill_key, backfill_before.backfill_old, jsonb_build_object('c', "public"."accounts"."c") AS backfill_new), "#
            + #"tally AS (SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed), checkpoint AS (UPDATE r SET n = 1), journal AS (INSERT INTO jl SELECT * FROM changed) SELECT rows, outside FROM tally"#)
        // Without a journal the statement is what it always was.
        let plain = try JobSpec.parse(yaml: "name: j\ntable: public.accounts\nkey: [id]\nwhere: c IS NULL\nset: {c: 'b * 2'}", file: "j.yaml")
        #expect(!BatchStatements(spec: plain, key: key).batch(afterKey: true, checkpoint: "UPDATE r SET n = 1").text.contains("backfill_"))
        #expect(plain.fingerprint != spec.fingerprint)
    }

    @Test("the batch statement with the store's checkpoint and journal: one text from batch to batch (it is prepared), the values numbered after the keys")
    func composedBatch() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\nset: {c: '1'}\njournal: true", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: key), store = CheckpointStore()
        func statement(lower: String, upper: String, worker: String) throws -> SQL {
            let counts = try #require(sql.counts(afterKey: true))
            let checkpoint = try #require(store.checkpoint("j", range: 3, lastKey: [upper], keys: 10, worker: worker, rows: counts.rows, outside: counts.outside))
            let batch = sql.batch(afterKey: true, checkpoint: checkpoint, journal: store.journal("j"))
            #expect(batch.slots == BatchStatements.Slots.lower(1) + BatchStatements.Slots.upper(1))
            return sql.binding(batch, lower: [lower], upper: [upper])
        }
        let first = try statement(lower: "100", upper: "200", worker: "w0"), next = try statement(lower: "200", upper: "300", worker: "w1")
        #expect(first.text == next.text)
        #expect(first.text.contains(#"checkpoint AS (UPDATE "backfill".ranges SET last_key = $3::jsonb, rows_done = rows_done + (SELECT rows FROM tally), keys_walked = keys_walked + $4,"#))
        #expect(first.text.contains("WHERE job = $6 AND range_id = $7)"))
        #expect(first.text.contains(#"journal AS (INSERT INTO "backfill".journal (job, pass, key, old, new) SELECT $8, (SELECT pass FROM "backfill".jobs WHERE name = $8), backfill_key"#))
        #expect(first.values == [.text("100"), .text("200"), .text(#"["200"]"#), .int(10), .text("w0"), .text("j"), .int(3), .text("j")])
        #expect(next.values == [.text("200"), .text("300"), .text(#"["300"]"#), .int(10), .text("w1"), .text("j"), .int(3), .text("j")])
        // A range's first batch: the upper key only, the checkpoint's values after it.
        let counts = try #require(sql.counts(afterKey: false))
        let checkpoint = try #require(store.checkpoint("j", range: 0, lastKey: ["5"], keys: 5, worker: "w", rows: counts.rows, outside: counts.outside))
        let fromStart = sql.binding(sql.batch(afterKey: false, checkpoint: checkpoint), upper: ["5"])
        #expect(fromStart.text.contains("SET last_key = $2::jsonb") && fromStart.values.first == .text("5"))
    }

    @Test("delete with a journal keeps the whole deleted row")
    func deleteJournal() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\naction: delete\nwhere: old\njournal: true", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: key).batch(afterKey: false, checkpoint: "UPDATE r SET n = 1", journal: "INSERT INTO jl SELECT * FROM changed")
        #expect(sql.text.hasPrefix(#"WITH changed AS (DELETE FROM "t" WHERE "id" <= $1::bigint AND (old) RETURNING NOT ("id" <= $1::bigint) AS outside, jsonb_build_array("t"."id"::text) AS backfill_key, to_jsonb("t".*) AS backfill_old, NULL::jsonb AS backfill_new)"#))
    }

    @Test("revert of an update: old values back only where every set column still holds what the job wrote; checkpoint and lease in the same statement")
    func revertUpdate() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\nset: {a: '1', \"B c\": '2'}\njournal: true", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: key).revert(action: spec.action, tables: tables, columns: ["id", "a", "B c"])
        #expect(sql.text.contains(#"FROM "backfill".journal j WHERE j.job = $1 AND ($2::bigint IS NULL OR j.seq < $2::bigint) ORDER BY j.seq DESC LIMIT $3"#))
        #expect(sql.text.contains(#"batch AS MATERIALIZED (SELECT * FROM candidates WHERE seq > (SELECT coalesce(max(c.seq), -1) FROM candidates c WHERE EXISTS (SELECT 1 FROM candidates d WHERE d.key = c.key AND d.seq > c.seq)))"#),
                "a batch holds each key once")
        #expect(sql.text.contains(#"jsonb_populate_record(NULL::"t", old) AS o, jsonb_populate_record(NULL::"t", new) AS n"#))
        #expect(sql.text.contains(#"UPDATE "t" SET "a" = (r.o)."a", "B c" = (r.o)."B c" FROM r WHERE "t"."id" = (r.key ->> 0)::bigint AND "t"."a" IS NOT DISTINCT FROM (r.n)."a" AND "t"."B c" IS NOT DISTINCT FROM (r.n)."B c" RETURNING r.key"#))
        #expect(sql.text.contains(#"INSERT INTO "backfill".revert_conflicts (job, pass, key) SELECT $1, b.pass, b.key FROM batch b WHERE NOT EXISTS (SELECT 1 FROM restored x WHERE x.key = b.key)"#))
        #expect(sql.text.contains(#"WHERE name = $1 AND EXISTS (SELECT 1 FROM "backfill".leases l WHERE l.job = $1 AND l.token = $4) RETURNING 1"#))
        #expect(sql.text.contains("SET revert_last = coalesce((SELECT min(seq) FROM batch), revert_last)"))
    }

    @Test("revert of a delete: rows inserted again with their non-generated columns, unless a key is taken")
    func revertDelete() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\naction: delete\nwhere: old\njournal: true", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: key).revert(action: spec.action, tables: tables, columns: ["id", "v"])
        #expect(sql.text.contains(#"restored AS (INSERT INTO "t" ("id", "v") OVERRIDING SYSTEM VALUE SELECT (r.o)."id", (r.o)."v" FROM r ON CONFLICT DO NOTHING RETURNING jsonb_build_array("t"."id"::text) AS key)"#))
    }

    @Test("`journal` is a boolean, off by default, and refused with an sql action (field and fix named)")
    func parsing() throws {
        #expect(try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\naction: delete\nwhere: old", file: "j.yaml").journal == false)
        #expect(throws: JobFileError.self) { try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\naction: delete\nwhere: old\njournal: maybe", file: "j.yaml") }
        do {
            _ = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\nsql: UPDATE t SET x = 1 FROM batch\njournal: true", file: "j.yaml")
            Issue.record("journal with sql was accepted")
        } catch {
            #expect(error.field == "journal")
            #expect(error.fix.contains("set"))
        }
    }
}
