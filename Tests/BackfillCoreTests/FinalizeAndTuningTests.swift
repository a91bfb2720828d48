@testable import BackfillCore
import Testing

/// `requires`, `finalize` and live tuning: what is decided without a database.
@Suite("Requirements, finalize steps and live tuning")
struct FinalizeAndTuningTests {
    let head = "name: f\ntable: accounts\nkey: [id]\nset: {email_lower: lower(email)}\n"

    func problems(_ yaml: String) -> [JobFileError] {
        do {
            _ = try JobSpec.parse(yaml: head + yaml, file: "f.yaml")
            return []
        } catch {
            return error.all
        }
    }

    @Test("requires and finalize are read: one statement per step, a trailing `;` dropped, the order kept")
    func parsesBoth() throws {
        let spec = try JobSpec.parse(yaml: head + """
            requires: SELECT coalesce(max(version), 0) >= 20261121 FROM schema_migrations
            finalize:
              - ALTER TABLE accounts VALIDATE CONSTRAINT email_lower_set;
              - |
                -- the constraint proves it: no scan under the lock
                ALTER TABLE accounts ALTER COLUMN email_lower SET NOT NULL
              - ALTER TABLE accounts DROP CONSTRAINT email_lower_set
            """, file: "f.yaml")
        #expect(spec.requires == "SELECT coalesce(max(version), 0) >= 20261121 FROM schema_migrations")
        #expect(spec.finalize.count == 3)
        #expect(spec.finalize[0] == "ALTER TABLE accounts VALIDATE CONSTRAINT email_lower_set")
        #expect(spec.finalize[1].hasSuffix("SET NOT NULL"))
        let single = try JobSpec.parse(yaml: head + "finalize: ALTER TABLE accounts DROP CONSTRAINT c", file: "f.yaml")
        #expect(single.finalize == ["ALTER TABLE accounts DROP CONSTRAINT c"])
        #expect(try JobSpec.parse(yaml: head, file: "f.yaml").finalize.isEmpty)
    }

    @Test("finalize and requires are refused, naming the step, when they are not exactly one statement", arguments: [
        ("finalize:\n  - ALTER TABLE a VALIDATE CONSTRAINT c\n  - ALTER TABLE a DROP CONSTRAINT c; DROP TABLE a", "finalize step 2", "more than one statement"),
        ("finalize:\n  - COMMIT", "finalize step 1", "`COMMIT` cannot be a finalize step"),
        ("finalize:\n  - /* x */ begin", "finalize step 1", "`BEGIN` cannot be a finalize step"),
        ("finalize:\n  - SET lock_timeout = 0", "finalize step 1", "`SET` cannot be a finalize step"),
        ("finalize:\n  - ALTER TABLE a DROP CONSTRAINT (c", "finalize step 1", "unclosed parenthesis"),
        ("finalize:\n  - ALTER TABLE a DROP CONSTRAINT \"c\u{200B}\"", "finalize", "U+200B"),
        ("finalize:\n  - [a, b]", "finalize step 1", "one SQL statement as text"),
        ("finalize: {a: b}", "finalize", "must be a list"),
        ("finalize: []", "finalize", "is empty"),
        ("repeat: true\nfinalize: [ALTER TABLE a DROP CONSTRAINT c]", "finalize", "does not go with `repeat: true`"),
        ("requires: SELECT true; DROP TABLE a", "requires", "contains `;`"),
        ("requires: SELECT $1", "requires", "parameter"),
    ])
    func refused(yaml: String, field: String, problem: String) {
        let found = problems(yaml)
        #expect(found.contains { $0.field == field && $0.problem.contains(problem) }, "\(found.map(\.description))")
    }

    @Test("a statement's first word skips white space and nested comments")
    func leadingWord() {
        #expect(JobSpec.leadingWord("  -- c\n /* a /* b */ c */ Commit") == "commit")
        #expect(JobSpec.leadingWord("ALTER TABLE t") == "alter")
        #expect(JobSpec.leadingWord("-- only a comment") == nil)
    }

    @Test("tuning is bounded like the job file's fields; the overrides apply over the file's values")
    func tuningBounds() throws {
        #expect(Tuning(maxRowsPerSecond: 0, targetMs: 1, pauseMs: 0, workers: 1024).problems.isEmpty)
        let bad = Tuning(maxRowsPerSecond: -1, targetMs: 0, pauseMs: 3_600_001, workers: 1025).problems
        #expect(bad.count == 4)
        #expect(bad[0].contains("--max-rows-per-second -1") && bad[0].contains("throttle.max_rows_per_second"))
        #expect(bad[3].contains("1 to 1024"))
        let spec = try JobSpec.parse(yaml: head + "throttle: {max_rows_per_second: 20000}\nbatch: {target_ms: 50, pause_ms: 5}", file: "f.yaml")
        let tuned = Tuning(maxRowsPerSecond: 10000, workers: 2).applied(to: spec)
        #expect(tuned.throttle.maxRowsPerSecond == 10000 && tuned.batch.targetMs == 50 && tuned.batch.pauseMs == 5 && tuned.workers == 2)
        #expect(Tuning().isEmpty && !Tuning(pauseMs: 0).isEmpty)
        #expect(Tuning(maxRowsPerSecond: 10000, workers: 2, by: "ann@db1").summary == "max_rows_per_second=10000, workers=2 by ann@db1")
    }

    @Test("wait: done is 0, failed, cancelled and reverted (or being reverted) are 1, anything else keeps waiting", arguments: JobState.allCases)
    func waitVerdict(state: JobState) {
        let expected: JobWait.Verdict = switch state {
        case .done: .finished(exitCode: 0)
        case .failed, .cancelled, .reverting, .reverted: .finished(exitCode: 1)
        default: .keepWaiting
        }
        #expect(JobWait.verdict(state) == expected)
    }

    @Test("wait: a job the store does not hold yet keeps waiting, and the line says which of the two it is")
    func waitNotRegistered() {
        #expect(JobWait.verdict(nil) == .keepWaiting)
        #expect(JobWait.notRegisteredLine(job: "gate", schema: "ops", storeExists: false) == "gate is not registered yet (no checkpoint store in schema `ops` yet)")
        #expect(JobWait.notRegisteredLine(job: "gate", schema: "ops", storeExists: true) == "gate is not registered yet (no job of that name in schema `ops`)")
    }
}
