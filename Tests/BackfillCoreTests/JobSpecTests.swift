import BackfillCore
import Testing

@Suite("Job file parsing and validation")
struct JobSpecTests {
    let minimal = """
        name: fill
        table: public.accounts
        key: [id]
        set:
          balance_cents: (balance * 100)::bigint
        """

    @Test("a minimal job gets every documented default")
    func defaults() throws {
        let spec = try JobSpec.parse(yaml: minimal, file: "fill.yaml")
        #expect(spec.name == "fill")
        #expect(spec.tableParts == ["public", "accounts"])
        #expect(spec.key == ["id"])
        #expect(spec.action == .update([.init(column: "balance_cents", expression: "(balance * 100)::bigint")]))
        #expect(spec.batch == JobSpec.Batch())
        #expect(spec.batch.size == 1000 && spec.batch.min == 100 && spec.batch.max == 50_000 && spec.batch.targetMs == 50 && spec.batch.pauseMs == 0)
        #expect(spec.timeouts.lockMs == 100 && spec.timeouts.statementMs == 5000)
        #expect(spec.retry.maxAttempts == 8)
        #expect(spec.throttle.maxRowsPerSecond == 0 && spec.throttle.maxReplicationLagMs == 10_000 && spec.throttle.whenBlocking)
        #expect(spec.throttle.maxSlotLagMB == 1024 && spec.throttle.slots == nil && spec.throttle.maxWalMBPerSecond == 0)
        #expect(spec.throttle.maxArchiveBacklog == 0 && !spec.throttle.failOpen)
        #expect(spec.workers == 1)
    }

    @Test("delete and sql actions, composite keys, every section")
    func fullJob() throws {
        let spec = try JobSpec.parse(yaml: """
            name: purge
            table: '"My Schema".Sessions'
            key: [tenant_id, id]
            action: delete
            where: expires_at < now()
            batch: {size: 500, min: 10, max: 900, target_ms: 20, pause_ms: 5}
            timeouts: {lock_ms: 50, statement_ms: 1000}
            retry: {max_attempts: 3, backoff_ms: 10, max_backoff_ms: 100, reconnect_timeout_ms: 0}
            throttle: {max_rows_per_second: 20000, when_blocking: false, check_sql: "SELECT true"}
            """, file: "p.yaml")
        #expect(spec.action == .delete)
        #expect(spec.tableParts == ["My Schema", "sessions"])
        #expect(spec.key == ["tenant_id", "id"])
        #expect(spec.batch.pauseMs == 5 && spec.timeouts.lockMs == 50 && spec.retry.maxAttempts == 3)
        #expect(spec.throttle.maxRowsPerSecond == 20000 && !spec.throttle.whenBlocking && spec.throttle.checkSQL == "SELECT true")
        let wal = try JobSpec.parse(yaml: """
            name: w
            table: t
            key: id
            set: {a: 1}
            throttle: {max_slot_lag_mb: 4, slots: [debezium, orders], max_wal_mb_per_second: 5, max_archive_backlog: 20, fail_open: true}
            """, file: "w.yaml")
        #expect(wal.throttle.maxSlotLagMB == 4 && wal.throttle.slots == ["debezium", "orders"] && wal.throttle.maxWalMBPerSecond == 5)
        #expect(wal.throttle.maxArchiveBacklog == 20 && wal.throttle.failOpen)
        let sqlJob = try JobSpec.parse(yaml: "name: s\ntable: t\nkey: id\nsql: |\n  UPDATE t SET x = 1 FROM batch WHERE t.id = batch.id;\n", file: "s.yaml")
        #expect(sqlJob.action == .sql("UPDATE t SET x = 1 FROM batch WHERE t.id = batch.id"))
    }

    @Test(
        "bad job files name the field and the fix",
        arguments: [
            ("name: x\ntable: t\nkey: [id]\nset:\n  a: 1\n bad: indent", nil as String?, "not valid YAML"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nbatch:\n  sise: 10", "batch.sise", "did you mean `size`"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\ntimout: {}", "timout", "unknown field"),
            ("table: t\nkey: [id]\nset: {a: 1}", "name", "required"),
            ("name: x\nkey: [id]\nset: {a: 1}", "table", "required"),
            ("name: x\ntable: t\nset: {a: 1}", "key", "required"),
            ("name: x\ntable: t\nkey: [id]", "set", "does nothing"),
            ("name: x\ntable: t\nkey: [id]\nset: {}", "set", "is empty"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nbatch: {size: lots}", "batch.size", "whole number"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nbatch: {size: 0}", "batch.size", "out of range"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nbatch: {min: 500, max: 100}", "batch.min", "larger than"),
            ("name: x\ntable: t\nkey: [id]\naction: delete", "where", "needs `where`"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nsql: SELECT 1", nil, "more than one action"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nwhere: 1=1) OR (true", "where", "parenthesis"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: \"1; DROP TABLE t\"}", "set.a", "`;`"),
            ("name: 'bad name!'\ntable: t\nkey: [id]\nset: {a: 1}", "name", "not a valid job name"),
            ("name: x\ntable: a.b.c.d\nkey: [id]\nset: {a: 1}", "table", "not a table name"),
            ("name: x\ntable: t\nkey: [id, id]\nset: {a: 1}", "key", "twice"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nthrottle: {when_blocking: maybe}", "throttle.when_blocking", "true or false"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nthrottle: {slots: []}", "throttle.slots", "list of names"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nthrottle: {max_wal_mb_per_second: -1}", "throttle.max_wal_mb_per_second", "out of range"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {action: skp}", "on_error.action", "did you mean `skip`"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {action: skip, max_row: 3}", "on_error.max_row", "did you mean `max_rows`"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {action: skip, max_rows: 0}", "on_error.max_rows", "out of range"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {action: skip, max_rows: many}", "on_error.max_rows", "whole number"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {action: skip, exit_zero: perhaps}", "on_error.exit_zero", "true or false"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: {max_rows: 5}", "on_error.max_rows", "only to `action: skip`"),
            ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\non_error: skip", "on_error", "mapping"),
            ("", nil, "empty"),
        ])
    func badFiles(yaml: String, field: String?, problem: String) {
        do {
            _ = try JobSpec.parse(yaml: yaml, file: "jobs/bad.yaml")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.file == "jobs/bad.yaml")
            #expect(error.field == field, "\(error)")
            #expect(error.description.contains(problem), "\(error)")
            #expect(!error.fix.isEmpty)
        }
    }

    @Test("the fingerprint changes with what rows get, not with tuning")
    func fingerprint() throws {
        let base = try JobSpec.parse(yaml: minimal, file: "a.yaml")
        let tuned = try JobSpec.parse(yaml: minimal + "\nbatch: {size: 5000}\ntimeouts: {lock_ms: 10}", file: "b.yaml")
        let changed = try JobSpec.parse(yaml: minimal.replacingOccurrences(of: "100)", with: "1000)"), file: "a.yaml")
        let filtered = try JobSpec.parse(yaml: minimal + "\nwhere: balance_cents IS NULL", file: "a.yaml")
        #expect(base.fingerprint == tuned.fingerprint)
        let lenient = try JobSpec.parse(yaml: minimal + "\non_error: {action: skip, max_rows: 10, exit_zero: true}", file: "a.yaml")
        #expect(lenient.onError.action == .skip && lenient.onError.maxRows == 10 && lenient.onError.exitZero)
        #expect(base.onError == JobSpec.OnError() && base.onError.action == .stop && base.onError.maxRows == 1000 && !base.onError.exitZero)
        #expect(base.fingerprint == lenient.fingerprint, "on_error decides whether the job goes past a bad row, not what rows get")
        #expect(base.fingerprint != changed.fingerprint)
        #expect(base.fingerprint != filtered.fingerprint)
    }

    @Test("one pass reports every problem of a file, each with its line, field and fix")
    func everyProblem() {
        let yaml = """
            name: 'bad name!'
            table: t
            key: [id]
            set: {a: 1}
            batch: {size: lots, target_msec: 5}
            timeouts: {lock_ms: 0}
            throttle: {when_blocking: maybe}
            workers: 0
            """
        do {
            _ = try JobSpec.parse(yaml: yaml, file: "jobs/bad.yaml")
            Issue.record("accepted")
        } catch {
            let problems = error.all
            #expect(problems.map(\.field) == ["name", "batch.target_msec", "batch.size", "timeouts.lock_ms", "throttle.when_blocking", "workers"], "\(error)")
            #expect(problems.allSatisfy { $0.line != nil && !$0.fix.isEmpty })
            #expect(error.description.contains("(6 problems in this file)"))
            #expect(error.description.contains("jobs/bad.yaml:5: field `batch.size`"), "\(error)")
        }
    }
}
