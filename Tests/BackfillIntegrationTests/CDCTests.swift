import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

/// One cluster with `wal_level = logical` for the decoding tests (a server-start setting, so not
/// the tests' common cluster); each test has a database and a `test_decoding` slot of its own.
private let cdcCluster = Mutex<LocalPostgres?>(nil)

private func cdcDatabase(_ label: String, rows: Int) throws -> (url: String, db: Connection) {
    let cluster = try cdcCluster.withLock { cluster in
        if let cluster { return cluster }
        let started = try LocalPostgres.start(settings: ["wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"])
        cluster = started
        return started
    }
    let url = try cluster.createDatabase("cdc_\(label)_\(getpid())")
    let db = try Connection(url)
    try seedItems(db, rows: rows)
    try db.execute("SELECT pg_create_logical_replication_slot('cdc_\(label)', 'test_decoding')")
    return (url, db)
}

/// One decoded transaction of test_decoding's output (`include-xids`): its xid and the lines
/// between BEGIN and COMMIT.
private struct Decoded {
    var xid: String
    var lines: [String] = []
    var messages: [String] { lines.filter { $0.hasPrefix("message: transactional: 1 prefix: backfill,") } }
    func changes(_ table: String, _ kind: String = "UPDATE") -> Int { lines.filter { $0.hasPrefix("table public.\(table): \(kind):") }.count }
    /// The JSON content of a message line.
    static func content(_ line: String) -> [String: Any]? {
        guard let start = line.range(of: "content:") else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(line[start.upperBound...].utf8))) as? [String: Any]
    }
}

/// The slot's changes, consumed (`peek` leaves them), split into transactions. Decoding reads
/// flushed WAL only, and batches (and this cluster) commit with `synchronous_commit = off`: a
/// transaction of the test's own, committed synchronously, flushes theirs first.
private func decode(_ db: Connection, slot: String, onlyLocal: Bool, peek: Bool = false) throws -> [Decoded] {
    try db.execute("BEGIN; SET LOCAL synchronous_commit = on; CREATE TEMP TABLE flush_wal (x int) ON COMMIT DROP; COMMIT")
    let lines = try db.query("SELECT data FROM pg_logical_slot_\(peek ? "peek" : "get")_changes($1, NULL, NULL, 'include-xids', '1', 'only-local', $2)",
                             [.text(slot), .text(onlyLocal ? "1" : "0")]).rows.compactMap { $0["data"].string }
    var result: [Decoded] = []
    for line in lines {
        if line.hasPrefix("BEGIN ") {
            result.append(Decoded(xid: String(line.dropFirst(6))))
        } else if !line.hasPrefix("COMMIT "), !result.isEmpty {
            result[result.count - 1].lines.append(line)
        }
    }
    return result
}

private func events(_ run: CLIProcess, _ kind: String) -> [[String: Any]] { run.events.filter { $0["event"] as? String == kind } }

@Suite("cdc: batches that change-data-capture consumers recognise (replication origin, logical messages)", .serialized)
struct CDCTests {
    @Test("cdc.origin: only-local decoding shows the application's concurrent change and none of the backfill's 20,000 rows; without it, all of them")
    func originFilters() throws {
        let (url, db) = try cdcDatabase("origin", rows: 20_000)
        try seedItems(db, rows: 20_000, table: "plain")
        try db.execute("CREATE TABLE audit (note text)")
        // Two workers: the second session takes `backfill-2` (one session at a time per origin).
        let marked = try CLIProcess(["run", try jobFile(itemsJob(name: "marked", extra: """
            cdc: {origin: backfill}
            throttle: {max_rows_per_second: 10000, when_blocking: false}
            workers: 2
            """)), "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "marked") > 0 })
        try db.execute("INSERT INTO audit VALUES ('the application, during the backfill')")
        #expect(rowsDone(db, job: "marked") < 20_000, "the job finished before the application's change")
        #expect(marked.wait() == 0, "\(marked.stderr.suffix(2000))")
        try expectExactlyOnce(db, rows: 20_000)
        let start = try #require(events(marked, "start").first)
        #expect(start["cdc_origin"] as? String == "backfill" && (start["run_id"] as? String)?.count == 36, "\(start)")
        let origins = Set(events(marked, "cdc").compactMap { $0["state"] as? String == "origin" ? $0["origin"] as? String : nil })
        #expect(origins == ["backfill", "backfill-2"], "\(origins)")
        let created = try db.query("SELECT array_agg(roname ORDER BY roname)::text AS o FROM pg_replication_origin WHERE roname LIKE 'backfill%'").first?["o"].string
        #expect(created == "{backfill,backfill-2}")
        // The same work without cdc, on another table.
        let plain = try backfill(["run", try jobFile(itemsJob(name: "unmarked", table: "plain")), "--database", url])
        #expect(plain.code == 0, "\(plain.err.suffix(2000))")

        let all = try decode(db, slot: "cdc_origin", onlyLocal: false, peek: true)
        #expect(all.reduce(0) { $0 + $1.changes("items") } == 20_000, "the backfill's changes are in the stream")
        let local = try decode(db, slot: "cdc_origin", onlyLocal: true)
        #expect(local.reduce(0) { $0 + $1.changes("items") } == 0, "only-local shows the backfill's changes")
        #expect(local.reduce(0) { $0 + $1.changes("plain") } == 20_000, "a job without cdc.origin is not filtered")
        #expect(local.contains { $0.lines.contains { $0.hasPrefix("table public.audit: INSERT") } }, "the application's change is missing")
        #expect(local.allSatisfy { !$0.lines.contains { $0.hasPrefix("table backfill.ranges: UPDATE:") && $0.contains("'marked'") } },
                "the checkpoints of the marked batches are in their transactions, and marked too")
    }

    @Test("cdc.messages: one message per committed batch, first in its transaction; none for a batch rolled back (lock_timeout retry), a dry run; a sql action too")
    func messages() throws {
        let (url, db) = try cdcDatabase("messages", rows: 20_000)
        let app = try Connection(url)
        try app.execute("BEGIN")
        try app.query("UPDATE items SET touched = 1 WHERE id = 10500")
        let run = try CLIProcess(["run", try jobFile(itemsJob(name: "msgs", extra: """
            cdc: {messages: true}
            batch: {size: 1000, min: 1000, max: 1000}
            timeouts: {lock_ms: 50}
            throttle: {when_blocking: false}
            """)), "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { !events(run, "retry").isEmpty }, "no batch waited on the application's row")
        try app.execute("COMMIT")
        #expect(run.wait() == 0, "\(run.stderr.suffix(2000))")
        try expectExactlyOnce(db, rows: 20_000)
        let batches = events(run, "batch").count
        let runID = try #require(events(run, "start").first?["run_id"] as? String)
        #expect(batches >= 20 && events(run, "retry").count >= 1, "\(batches) batches, \(events(run, "retry").count) retries")

        let decoded = try decode(db, slot: "cdc_messages", onlyLocal: false)
        let labelled = decoded.filter { !$0.messages.isEmpty }
        #expect(labelled.count == batches, "\(labelled.count) transactions with a message, \(batches) batches committed")
        for txn in labelled {
            #expect(txn.messages.count == 1, "\(txn.xid): \(txn.messages.count) messages")
            #expect(txn.lines.first == txn.messages.first, "\(txn.xid): the message is not right before the batch's changes: \(txn.lines.prefix(2))")
            let content = try #require(Decoded.content(txn.messages[0]), "\(txn.messages[0])")
            #expect(content["job"] as? String == "msgs" && content["run"] as? String == runID && content["range"] is Int)
            #expect(content["keys"] as? Int == txn.changes("items"), "\(txn.xid): \(content) over \(txn.changes("items")) changed rows")
            #expect((content["upper"] as? [String])?.count == 1 && content["worker"] as? String != nil)
        }
        let contents = labelled.compactMap { Decoded.content($0.messages[0]) }
        #expect(contents.reduce(0) { $0 + ($1["keys"] as? Int ?? 0) } == 20_000)
        let ranges = Set(contents.compactMap { $0["range"] as? Int })
        #expect(contents.filter { $0["lower"] is NSNull }.count == 1 && ranges.count > 1, "one batch starts the first of the ranges \(ranges)")
        // Every other transaction with a change of items is the application's one UPDATE.
        let unlabelled = decoded.filter { $0.messages.isEmpty && $0.changes("items") > 0 }
        #expect(unlabelled.count == 1 && unlabelled.first?.changes("items") == 1, "\(unlabelled.map(\.lines))")

        // A dry run rolls every batch back, its messages with it.
        var options = RunOptions(database: url)
        options.dryRun = true
        let dry = Runner(spec: try JobSpec.parse(yaml: itemsJob(name: "dry", extra: "cdc: {messages: true}"), file: "dry.yaml"), options: options).run()
        #expect(dry.exitCode == 0, "\(dry)")
        // A sql action: its statement, then the checkpoint with its row count, after the message.
        try seedItems(db, rows: 3_000, table: "other")
        let sql = try backfill(["run", try jobFile("""
            name: sqlmsgs
            table: other
            key: [id]
            sql: UPDATE other SET filled = other.id * 2, writes = writes + 1 FROM batch WHERE other.id = batch.id
            cdc: {messages: true}
            batch: {size: 1000, min: 1000, max: 1000}
            """), "--database", url, "--log-format", "json"])
        #expect(sql.code == 0, "\(sql.err.suffix(2000))")
        try expectExactlyOnce(db, rows: 3_000, table: "other")
        let after = try decode(db, slot: "cdc_messages", onlyLocal: false)
        #expect(after.allSatisfy { $0.changes("items") == 0 }, "the dry run's changes were decoded")
        let sqlLabelled = after.filter { !$0.messages.isEmpty }
        #expect(sqlLabelled.count == sql.events.filter { $0["event"] as? String == "batch" }.count, "\(sqlLabelled.count) messages")
        #expect(sqlLabelled.allSatisfy { $0.lines.first == $0.messages.first && Decoded.content($0.messages[0])?["keys"] as? Int == $0.changes("other") },
                "\(sqlLabelled.map { $0.lines.prefix(2) })")
        #expect(sqlLabelled.reduce(0) { $0 + $1.changes("other") } == 3_000)
    }

    @Test("reconnect after pg_terminate_backend: the new worker session carries the origin too")
    func reconnectKeepsOrigin() throws {
        let (url, db) = try cdcDatabase("reconnect", rows: 20_000)
        let run = try CLIProcess(["run", try jobFile(itemsJob(name: "reconnect", extra: """
            cdc: {origin: bf_reconnect}
            throttle: {max_rows_per_second: 4000, when_blocking: false}
            """)), "--database", url, "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "reconnect") >= 2_000 })
        // The coordinator's and the worker's sessions (not the lease's): the worker reconnects.
        let killed = try db.query(
            """
            WITH workers AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'backfill:reconnect')
            SELECT count(*)::int AS n FROM workers WHERE pg_terminate_backend(pid)
            """).first?["n"].int
        let atKill = rowsDone(db, job: "reconnect")
        #expect((killed ?? 0) >= 1 && atKill < 20_000, "\(killed ?? 0) sessions ended at \(atKill) rows")
        #expect(run.wait() == 0, "\(run.stderr.suffix(2000))")
        try expectExactlyOnce(db, rows: 20_000)
        #expect(events(run, "retry").contains { $0["reason"] as? String == "connection_lost" }, "the worker did not lose its connection")
        #expect(events(run, "cdc").filter { $0["state"] as? String == "origin" }.count >= 2, "the new session did not set up the origin")
        let all = try decode(db, slot: "cdc_reconnect", onlyLocal: false, peek: true)
        #expect(all.reduce(0) { $0 + $1.changes("items") } == 20_000)
        let local = try decode(db, slot: "cdc_reconnect", onlyLocal: true)
        #expect(local.reduce(0) { $0 + $1.changes("items") } == 0, "changes after the reconnect were not marked")
    }

    @Test("a role that may not use replication origins: exit 2 naming the GRANT, nothing changed; granted, it runs; messages need no privilege (a warning below wal_level logical)")
    func privileges() throws {
        let (url, db) = try itemsDatabase("cdcrole", rows: 5_000)
        let dbname = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        let role = "bf_\(dbname)"
        try db.execute("CREATE ROLE \(role) LOGIN; GRANT CREATE, CONNECT ON DATABASE \(dbname) TO \(role); GRANT SELECT, UPDATE ON items TO \(role);")
        let roleURL = url + " user=\(role)"
        let job = try jobFile(itemsJob(name: "rolejob", extra: "cdc: {origin: bf_role_origin, messages: true}"))
        let refused = try backfill(["run", job, "--database", roleURL])
        #expect(refused.code == 2, "\(refused.err)")
        #expect(refused.err.contains("cdc.origin") && refused.err.contains("GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_session_setup(text) TO \"\(role)\""), "\(refused.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS none").first?["none"].bool == true, "the store was created")
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes > 0").first?["n"].int64 == 0)
        #expect(try db.query("SELECT count(*) AS n FROM pg_replication_origin WHERE roname = 'bf_role_origin'").first?["n"].int64 == 0)
        let plan = try backfill(["plan", job, "--database", roleURL])
        #expect(plan.code == 0 && plan.out.contains("cdc:") && plan.out.contains("`run` refuses it (exit 2)") && plan.out.contains("pg_logical_emit_message"), "\(plan.out)\(plan.err)")

        let walLevel = try #require(try db.query("SHOW wal_level").first?["wal_level"].string)
        let messagesOnly = try backfill(["run", try jobFile(itemsJob(name: "rolemsgs", extra: "cdc: {messages: true}\nwhere: filled IS NULL")),
                                         "--database", roleURL, "--log-format", "json"])
        #expect(messagesOnly.code == 0, "\(messagesOnly.err.suffix(2000))")
        let warnings = messagesOnly.events.filter { $0["event"] as? String == "cdc" && $0["state"] as? String == "warning" }
        #expect(warnings.count == (walLevel == "logical" ? 0 : 1) && warnings.allSatisfy { $0["level"] as? String == "warning" }, "\(warnings)")

        try db.execute("GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_session_setup(text) TO \(role)")
        try db.execute("UPDATE items SET filled = NULL, writes = 0")
        let granted = try backfill(["run", job, "--database", roleURL])
        #expect(granted.code == 0, "\(granted.err.suffix(2000))")
        try expectExactlyOnce(db, rows: 5_000)
        #expect(try db.query("SELECT count(*) AS n FROM pg_replication_origin WHERE roname = 'bf_role_origin'").first?["n"].int64 == 1)
        _ = try? db.execute("SELECT pg_replication_origin_drop('bf_role_origin')")
    }

    @Test("through a transaction-mode pooler: cdc.origin is refused (exit 2, nothing changed), cdc.messages runs")
    func pooler() throws {
        try #require(localCluster, "PgBouncer runs in front of the local cluster only")
        let cluster = try #require(try TestDatabases.localCluster())
        let bouncer = try LocalPgBouncer(in: cluster, mode: .transaction)
        let name = "cdc_pooled_\(getpid())"
        let db = try Connection(try cluster.createDatabase(name))
        try seedItems(db, rows: 5_000)
        let pooled = bouncer.conninfo(database: name)
        let refused = try backfill(["run", try jobFile(itemsJob(name: "pooled", extra: "cdc: {origin: bf_pooled}")), "--database", pooled])
        #expect(refused.code == 2 && refused.err.contains("pooler") && refused.err.contains("cdc.origin"), "\(refused.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS none").first?["none"].bool == true, "the store was created")
        let messages = try backfill(["run", try jobFile(itemsJob(name: "pooledmsgs", extra: "cdc: {messages: true}")), "--database", pooled])
        #expect(messages.code == 0, "\(messages.err.suffix(2000))")
        try expectExactlyOnce(db, rows: 5_000)
    }
}
