import BackfillCore
import BackfillTestSupport
import Foundation
import PostgresClient
import Testing

/// `accounts(id, email, email_lower)` with `rows` rows and the expand migration applied: the new
/// column and its NOT VALID check constraint.
func expandedAccounts(_ label: String, rows: Int) throws -> (url: String, db: Connection) {
    let url = try TestDatabases.create(label)
    let db = try Connection(url)
    try db.execute("""
        CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, balance bigint NOT NULL DEFAULT 0);
        INSERT INTO accounts (id, email) SELECT g, 'User' || g || '@Example.com' FROM generate_series(1, \(rows)) g;
        ALTER TABLE accounts ADD COLUMN email_lower text;
        ALTER TABLE accounts ADD CONSTRAINT accounts_email_lower_not_null CHECK (email_lower IS NOT NULL) NOT VALID;
        ANALYZE accounts;
        """)
    return (url, db)
}

/// The fill and its three finalize steps.
func finalizeJob(name: String, extra: String = "") -> String {
    """
    name: \(name)
    table: accounts
    key: [id]
    where: email_lower IS NULL
    set:
      email_lower: lower(email)
    timeouts: {lock_ms: 100}
    retry: {max_attempts: 60, backoff_ms: 50, max_backoff_ms: 300}
    finalize:
      - ALTER TABLE accounts VALIDATE CONSTRAINT accounts_email_lower_not_null
      - ALTER TABLE accounts ALTER COLUMN email_lower SET NOT NULL
      - ALTER TABLE accounts DROP CONSTRAINT accounts_email_lower_not_null
    \(extra)
    """
}

/// The JSON events a running child process has written so far.
func eventsSoFar(_ process: CLIProcess) -> [[String: Any]] { process.events }

/// An event's timestamp.
func eventTime(_ event: [String: Any]) -> Date? {
    guard let ts = event["ts"] as? String else { return nil }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: ts)
}

@Suite("Finalize: DDL after the job, each step once, under lock_timeout")
struct FinalizeTests {
    @Test("finalize under a 3 s conflicting lock: SET NOT NULL is retried and finishes; live writers never queue behind it longer than lock_ms; a rerun repeats no step")
    func finalizeUnderLock() throws {
        let (url, db) = try expandedAccounts("finalize_lock", rows: 20_000)
        let job = try jobFile(finalizeJob(name: "fin"))
        // A long read: ACCESS SHARE does not stop the fill or VALIDATE (SHARE UPDATE EXCLUSIVE),
        // but SET NOT NULL needs ACCESS EXCLUSIVE, and writers arriving while it waits queue behind it.
        let reader = try Connection(url)
        try reader.execute("BEGIN; SELECT count(*) FROM accounts")
        let run = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(60) { eventsSoFar(run).contains { $0["event"] as? String == "retry" && $0["step"] as? Int == 2 } }, "\(run.stderr)")
        let status = try backfill(["status", "fin", "--database", url, "--format", "json"])
        #expect(status.out.contains("\"state\":\"finalizing\""), "\(status.out)")
        // A live writer while the step keeps trying for 3 s: each write's wait is measured.
        let writer = try Connection(url)
        var worst = 0.0, writes = 0
        let until = Date().addingTimeInterval(3)
        while Date() < until {
            let began = Date()
            try writer.query("UPDATE accounts SET balance = balance + 1 WHERE id = $1", [.int(Int64.random(in: 1...20_000))])
            worst = max(worst, Date().timeIntervalSince(began) * 1000)
            writes += 1
            usleep(20_000)
        }
        try reader.execute("COMMIT")
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")
        #expect(writes >= 20, "the writer ran: \(writes) writes")
        #expect(worst < 100 + 400, "the worst live write waited \(worst) ms behind the waiting ALTER (lock_ms 100)")
        let retries = run.events.filter { $0["event"] as? String == "retry" && $0["step"] as? Int == 2 }
        #expect(retries.count >= 3 && retries.allSatisfy { $0["sqlstate"] as? String == "55P03" }, "\(retries)")
        let steps = run.events.filter { $0["event"] as? String == "finalize" && $0["state"] as? String == "done" }
        #expect(steps.map { $0["step"] as? Int } == [1, 2, 3])
        #expect(try db.query("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'email_lower'").first?["attnotnull"].bool == true)
        #expect(try db.query("SELECT count(*) AS n FROM pg_constraint WHERE conname = 'accounts_email_lower_not_null'").first?["n"].int64 == 0)
        let recorded = try db.query("SELECT step, done_at::text AS at FROM backfill.finalize_steps WHERE job = 'fin' ORDER BY step").rows
        #expect(recorded.map { $0["step"].int } == [1, 2, 3])
        #expect(try CheckpointStore().status(job: "fin", db: db).first?.state == .done)

        // Run again: every step is recorded, none runs (step 3 would fail: the constraint is gone).
        let again = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(again.code == 0, "\(again.err)")
        #expect(!again.events.contains { $0["event"] as? String == "finalize" })
        #expect(try db.query("SELECT done_at::text AS at FROM backfill.finalize_steps WHERE job = 'fin' ORDER BY step").rows.map { $0["at"].string }
            == recorded.map { $0["at"].string }, "the store's records are unchanged")
    }

    @Test("a failing step fails the job naming it (exit 1); the rerun starts from that step, the done ones are not repeated")
    func failedStepResumes() throws {
        let (url, db) = try itemsDatabase("finalize_fail", rows: 3_000)
        let job = try jobFile(itemsJob(name: "finfail", extra: """
            where: filled IS NULL
            finalize:
              - ALTER TABLE items ADD CONSTRAINT filled_set CHECK (filled IS NOT NULL) NOT VALID
              - ALTER TABLE items_audit ADD COLUMN checked_at timestamptz
            """))
        let plan = try backfill(["plan", job, "--database", url])
        #expect(plan.code == 0 && plan.out.contains("1. ALTER TABLE items ADD CONSTRAINT filled_set") && plan.out.contains("2. ALTER TABLE items_audit"), "\(plan.out)")
        let first = try backfill(["run", job, "--database", url])
        #expect(first.code == 1, "\(first.err)")
        #expect(first.err.contains("finalize step 2 of 2 failed") && first.err.contains("items_audit"), "\(first.err)")
        let status = try #require(try CheckpointStore().status(job: "finfail", db: db).first)
        #expect(status.state == .failed && status.lastError?.contains("finalize step 2") == true)
        try expectExactlyOnce(db, rows: 3_000)
        try db.execute("CREATE TABLE items_audit (id bigint)")
        // Step 1 again would fail (the constraint exists): the rerun skips it.
        let second = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(second.code == 0, "\(second.err)")
        let finalize = second.events.filter { $0["event"] as? String == "finalize" }
        #expect(finalize.map { "\($0["step"] ?? "?") \($0["state"] ?? "?")" } == ["1 skipped", "2 started", "2 done"])
        #expect(try db.query("SELECT count(*) AS n FROM pg_attribute WHERE attrelid = 'items_audit'::regclass AND attname = 'checked_at'").first?["n"].int64 == 1)
        try expectExactlyOnce(db, rows: 3_000)
    }

    @Test("the finalizer's session terminated while its step waits for a lock, and no connection allowed for a while: it keeps reconnecting, and the step runs exactly once")
    func reconnectsAfterTerminate() throws {
        let (url, db) = try itemsDatabase("finalize_reconnect", rows: 2_000)
        try db.execute("CREATE TABLE items_audit (id bigint)")
        let job = try jobFile(itemsJob(name: "finrec", extra: """
            timeouts: {lock_ms: 30000}
            retry: {max_attempts: 30, backoff_ms: 50, max_backoff_ms: 400}
            finalize:
              - ALTER TABLE items_audit ADD COLUMN checked_at timestamptz
            """))
        let database = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        let admin = try Connection(TestDatabases.serverConninfo())  // a database may not disallow connections to itself
        let locker = try Connection(url)
        try locker.execute("BEGIN; LOCK TABLE items_audit IN ACCESS SHARE MODE")
        let run = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        defer { try? admin.execute("ALTER DATABASE \(Identifier.quote(database)) WITH ALLOW_CONNECTIONS true") }
        let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE items_audit%'"
        #expect(try waitFor(60) { try !db.query(waiting).rows.isEmpty }, "\(run.stderr)")
        // New sessions are refused (existing ones live on); then the step's session is ended.
        try admin.execute("ALTER DATABASE \(Identifier.quote(database)) WITH ALLOW_CONNECTIONS false")
        #expect(try db.query("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM (\(waiting)) w").first?["n"].int == 1)
        let lostRetries = { run.events.filter { $0["event"] as? String == "retry" && $0["step"] as? Int == 1 && $0["reason"] as? String == "connection_lost" } }
        #expect(waitFor(30) { lostRetries().count >= 3 }, "the lost session and failed reconnects are retried: \(run.stderr)")
        try admin.execute("ALTER DATABASE \(Identifier.quote(database)) WITH ALLOW_CONNECTIONS true")
        try locker.execute("COMMIT")
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")
        let retries = lostRetries()
        #expect(retries.first?["sqlstate"] as? String == "57P01", "the terminated session: \(retries)")
        #expect(retries.dropFirst().allSatisfy { $0["sqlstate"] as? String != "57P01" }, "then failed reconnects: \(retries)")
        let finalize = run.events.filter { $0["event"] as? String == "finalize" }
        #expect(finalize.map { "\($0["step"] ?? "?") \($0["state"] ?? "?")" } == ["1 started", "1 done"])
        #expect(try db.query("SELECT count(*) AS n FROM pg_attribute WHERE attrelid = 'items_audit'::regclass AND attname = 'checked_at'").first?["n"].int64 == 1)
        #expect(try db.query("SELECT count(*) AS n FROM backfill.finalize_steps WHERE job = 'finrec'").first?["n"].int64 == 1)
        #expect(try CheckpointStore().status(job: "finrec", db: db).first?.state == .done)
        try expectExactlyOnce(db, rows: 2_000)
    }
}

@Suite("Requirements: nothing runs before `requires` holds")
struct RequirementsTests {
    @Test("requires false: exit 2 at once, nothing changed, not even the store; a time-boxed wait (BACKFILL_WAIT_FOR_REQUIREMENTS) gives up with exit 2")
    func refusedAtOnce() throws {
        let (url, db) = try itemsDatabase("requires_false", rows: 1_000)
        try db.execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY); INSERT INTO schema_migrations VALUES (20261001)")
        let job = try jobFile(itemsJob(name: "req", extra: "requires: SELECT coalesce(max(version), 0) >= 20261121 FROM schema_migrations"))
        let began = Date()
        let run = try backfill(["run", job, "--database", url])
        #expect(run.code == 2, "\(run.err)")
        #expect(Date().timeIntervalSince(began) < 10)
        #expect(run.err.contains("requirement does not hold") && run.err.contains("returned false") && run.err.contains("--wait-for-requirements"), "\(run.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS none").first?["none"].bool == true, "no store was created")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes > 0").first?["n"].int64 == 0)
        let waited = Date()
        let boxed = try backfill(["run", job, "--database", url], environment: ["BACKFILL_WAIT_FOR_REQUIREMENTS": "2s"])
        #expect(boxed.code == 2 && boxed.err.contains("after waiting 2 s"), "\(boxed.err)")
        #expect(Date().timeIntervalSince(waited) >= 2)
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS none").first?["none"].bool == true)
    }

    @Test("--wait-for-requirements 30s: the run starts within about a second of the migration that makes it true")
    func waitsForMigration() throws {
        let (url, db) = try itemsDatabase("requires_wait", rows: 2_000)
        // The table it reads does not exist yet either: an error counts as not met while waiting.
        let job = try jobFile(itemsJob(name: "reqwait", extra: "requires: SELECT coalesce(max(version), 0) >= 20261121 FROM schema_migrations"))
        let run = try CLIProcess(["run", job, "--database", url, "--wait-for-requirements", "30s", "--log-format", "json"])
        #expect(waitFor(20) { run.events.contains { $0["event"] as? String == "requirements" && $0["state"] as? String == "waiting" } }, "\(run.stderr)")
        usleep(1_500_000)
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS none").first?["none"].bool == true, "nothing touched while waiting")
        try db.execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY); INSERT INTO schema_migrations VALUES (20261121)")
        let migrated = Date()
        #expect(run.wait(timeout: 60) == 0, "\(run.stderr)")
        let met = try #require(run.events.first { $0["event"] as? String == "requirements" && $0["state"] as? String == "met" })
        let delay = try #require(eventTime(met)).timeIntervalSince(migrated)
        #expect(delay < 2.0, "started \(delay) s after the migration (re-checked every second)")
        let start = try #require(run.events.first { $0["event"] as? String == "start" })
        #expect(try #require(eventTime(start)) >= eventTime(met)!)
        try expectExactlyOnce(db, rows: 2_000)
    }
}
