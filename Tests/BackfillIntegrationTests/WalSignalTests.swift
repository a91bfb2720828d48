import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

/// One cluster for these tests: `wal_level = logical` (for a slot) and archiving that always
/// fails (a backlog that only grows) are server-start settings, so they cannot share the tests'
/// common cluster; the tests run one after another because the WAL they measure is the cluster's.
/// `rows` nil: an empty database.
private let walCluster = Mutex<LocalPostgres?>(nil)

private func walDatabase(_ label: String, rows: Int?) throws -> (url: String, db: Connection) {
    let cluster = try walCluster.withLock { cluster in
        if let cluster { return cluster }
        let started = try LocalPostgres.start(settings: [
            "wal_level": "logical", "max_replication_slots": "4", "max_wal_senders": "4",
            "archive_mode": "on", "archive_command": "'/bin/false'",
        ])
        cluster = started
        return started
    }
    let url = try cluster.createDatabase("wal_\(label)_\(getpid())")
    let db = try Connection(url)
    if let rows { try seedItems(db, rows: rows) }
    return (url, db)
}

private func throttleReason(_ db: Connection, job: String) -> String? {
    try? db.query("SELECT throttle_reason FROM backfill.jobs WHERE name = $1", [.text(job)]).first?["throttle_reason"].string
}

private func statusETA(_ url: String, job: String) throws -> Double {
    let out = try backfill(["status", job, "--database", url, "--format", "json"]).out
    let jobs = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]])
    return try #require(jobs.first?["eta_seconds"] as? Double, "no eta_seconds in \(out)")
}

@Suite("WAL, replication slots and archiving: throttles, failing closed, and what batches write", .serialized)
struct WalSignalTests {
    @Test("a logical slot nobody reads, 4 MB behind: the job waits (event and status say slot_lag), and resumes once the slot advances")
    func slotLag() throws {
        let (url, db) = try walDatabase("slot", rows: 300_000)
        try db.execute("SELECT pg_create_logical_replication_slot('bf_cdc', 'test_decoding')")
        defer { _ = try? db.execute("SELECT pg_drop_replication_slot('bf_cdc')") }
        let job = try jobFile(itemsJob(name: "slotlag", extra: "throttle: {max_slot_lag_mb: 4, max_rows_per_second: 50000, when_blocking: false}"))
        // The slot is read once a second: the row budget keeps the job from finishing in between.
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(60) { throttleReason(db, job: "slotlag") == "slot_lag" })
        let held = rowsDone(db, job: "slotlag")
        #expect(held > 0 && held < 300_000, "\(held) rows before the throttle")
        let status = try backfill(["status", "slotlag", "--database", url])
        #expect(status.out.contains("throttled: slot_lag") && status.out.contains("bf_cdc"), "\(status.out)")
        let etaBefore = try statusETA(url, job: "slotlag")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(rowsDone(db, job: "slotlag") == held, "rows moved while the slot was behind")
        // status shows an ETA that the wait does not push out, and the throttled time apart.
        let etaAfter = try statusETA(url, job: "slotlag")
        #expect(abs(etaAfter - etaBefore) < 0.5, "status ETA \(etaBefore) s, then \(etaAfter) s 1.5 s into the throttle")
        let table = try backfill(["status", "slotlag", "--database", url])
        #expect(table.out.contains("ETA ~") && table.out.contains("not counted"), "\(table.out)")
        // The consumer catches up: the job goes on, and stays within 4 MB of the slot.
        let done = Atomic<Bool>(false)
        let consumer = Thread {
            guard let c = try? Connection(url) else { return }
            while !done.load(ordering: .relaxed) {
                _ = try? c.query("SELECT pg_replication_slot_advance('bf_cdc', pg_current_wal_lsn())")
                usleep(200_000)
            }
        }
        consumer.start()
        defer { done.store(true, ordering: .relaxed) }
        let code = runner.wait(timeout: 180)
        done.store(true, ordering: .relaxed)
        #expect(code == 0, "\(runner.stderr.suffix(2000))")
        let throttles = runner.events.filter { $0["event"] as? String == "throttle" && $0["reason"] as? String == "slot_lag" }
        #expect(throttles.contains { $0["state"] as? String == "waiting" && ($0["detail"] as? String ?? "").contains("bf_cdc") })
        #expect(throttles.contains { $0["state"] as? String == "resumed" })
        try expectExactlyOnce(db, rows: 300_000)
        // A slot named in throttle.slots that does not exist: the job waits and says which.
        let named = try backfill(["run", try jobFile(itemsJob(name: "named", extra: "throttle: {max_slot_lag_mb: 4, slots: [cdc_gone]}")),
                                  "--database", url, "--log-format", "json", "--max-runtime", "2s"])
        #expect(named.code == 3 && rowsDone(db, job: "named") == 0, "\(named.err.suffix(1500))")
        let detail = named.events.first { $0["event"] as? String == "throttle" }?["detail"] as? String ?? ""
        #expect(detail.contains("no logical slot named cdc_gone"), "\(detail)")
    }

    @Test("max_wal_mb_per_second: 5 holds the cluster's measured WAL rate within 20 %")
    func walBudget() throws {
        let (url, db) = try walDatabase("walrate", rows: 600_000)
        let job = try jobFile(itemsJob(name: "walrate", extra: "throttle: {max_wal_mb_per_second: 5, when_blocking: false}"))
        let runner = try CLIProcess(["run", job, "--database", url, "--log-format", "json", "--max-runtime", "12s"])
        // Measure from the first committed batch, so that start-up is not counted.
        #expect(waitFor(30) { rowsDone(db, job: "walrate") > 0 })
        let lsn = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 AS b"
        let (startBytes, started) = (try db.query(lsn).first?["b"].double ?? 0, Date())
        let code = runner.wait(timeout: 60)
        let (endBytes, ended) = (try db.query(lsn).first?["b"].double ?? 0, Date())
        #expect(code == 3, "\(runner.stderr.suffix(2000))")
        let rate = (endBytes - startBytes) / 1_048_576 / ended.timeIntervalSince(started)
        #expect(rate > 4 && rate < 6, "measured \(rate) MB/s of WAL")
        #expect(runner.events.contains { $0["event"] as? String == "throttle" && $0["reason"] as? String == "wal_rate" })
        let done = rowsDone(db, job: "walrate")
        #expect(done > 0 && done < 600_000, "the budget did not slow the job: \(done) rows in 12 s")
    }

    @Test("a role that may not read the archive backlog waits naming pg_monitor; with fail_open it runs; with pg_monitor it reads the backlog")
    func failClosed() throws {
        let (url, db) = try walDatabase("failclosed", rows: 5_000)
        let dbname = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        let role = "bf_\(dbname)"
        try db.execute("""
            CREATE ROLE \(role) LOGIN; GRANT CREATE, CONNECT ON DATABASE \(dbname) TO \(role);
            GRANT SELECT, UPDATE ON items TO \(role);
            """)
        // Archiving fails from the start: nothing was ever archived, a backlog piles up.
        try db.execute("CREATE TABLE churn (x int); INSERT INTO churn VALUES (1); SELECT pg_switch_wal();")
        try db.execute("INSERT INTO churn VALUES (2); SELECT pg_switch_wal(); INSERT INTO churn VALUES (3); SELECT pg_switch_wal();")
        let roleURL = url + " user=\(role)"
        let closed = try jobFile(itemsJob(name: "closed", extra: "throttle: {max_archive_backlog: 1}"))
        let runner = try CLIProcess(["run", closed, "--database", roleURL, "--log-format", "json", "--max-runtime", "4s"])
        let code = runner.wait(timeout: 60)
        #expect(code == 3, "\(runner.stderr.suffix(2000))")
        #expect(rowsDone(db, job: "closed") == 0)
        let waiting = runner.events.first { $0["event"] as? String == "throttle" && $0["state"] as? String == "waiting" }
        #expect(waiting?["reason"] as? String == "signal_unreadable")
        let detail = waiting?["detail"] as? String ?? ""
        #expect(detail.contains("pg_monitor") && detail.contains("fail_open"), "\(detail)")

        let open = try jobFile(itemsJob(name: "open", extra: "throttle: {max_archive_backlog: 1, fail_open: true}"))
        let ran = try backfill(["run", open, "--database", roleURL])
        #expect(ran.code == 0, "\(ran.err)")
        try expectExactlyOnce(db, rows: 5_000)

        try db.execute("GRANT pg_monitor TO \(role); UPDATE items SET writes = 0, filled = NULL")
        let monitored = try jobFile(itemsJob(name: "monitored", extra: "throttle: {max_archive_backlog: 1}"))
        let watcher = try CLIProcess(["run", monitored, "--database", roleURL, "--max-runtime", "3s"])
        #expect(waitFor(20) { throttleReason(db, job: "monitored") == "archive_backlog" })
        let status = try backfill(["status", "monitored", "--database", url, "--format", "json"])
        #expect(status.out.contains("WAL segments wait for the archiver"), "\(status.out)")
        #expect(watcher.wait(timeout: 30) == 3)
    }

    @Test("batch events carry WAL bytes and the table's HOT share: an index on the filled column shows as no HOT updates and more WAL")
    func hotShareAndWal() throws {
        // On a cluster of its own: WAL per batch counts every session's WAL of that moment.
        let (url, db) = try walDatabase("writecost", rows: nil)
        var results: [String: (hot: Double, walPerRow: Double)] = [:]
        for table in ["plain", "indexed"] {
            try db.execute("""
                CREATE TABLE \(table) (id bigint PRIMARY KEY, payload text NOT NULL, filled bigint, writes int NOT NULL DEFAULT 0, touched int NOT NULL DEFAULT 0) WITH (fillfactor = 50);
                INSERT INTO \(table) (id, payload) SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
                ANALYZE \(table);
                """)
            if table == "indexed" { try db.execute("CREATE INDEX ON indexed (filled)") }
            let (outcome, events) = try runJob(itemsJob(name: table, table: table, extra: "throttle: {max_rows_per_second: 25000, when_blocking: false}"), url: url)
            guard case .done = outcome else { Issue.record("\(outcome)"); return }
            let batches = events.filter { $0.kind == .batch }
            let wal = batches.reduce(0.0) { sum, e in if case .int(let n) = e["wal_bytes"] { sum + Double(n) } else { sum } }
            let hot = batches.compactMap { e -> Double? in if case .double(let r) = e["hot_update_ratio"] { r } else { nil } }.last
            #expect(batches.allSatisfy { $0["wal_bytes"] != nil }, "a batch without wal_bytes")
            results[table] = (try #require(hot, "no hot_update_ratio in \(batches.count) batches of \(table)"), wal / 100_000)
        }
        let plain = try #require(results["plain"]), indexed = try #require(results["indexed"])
        #expect(plain.hot > 0.5 && indexed.hot < 0.1, "HOT share: plain \(plain.hot), indexed \(indexed.hot)")
        #expect(plain.walPerRow > 20 && indexed.walPerRow > plain.walPerRow, "WAL bytes per row: plain \(plain.walPerRow), indexed \(indexed.walPerRow)")
    }

    @Test("with a replica, a role that may not see its lag waits naming pg_read_all_stats; with fail_open it runs")
    func hiddenReplicaLag() throws {
        let (primary, standby, url, db) = try primaryWithStandby("hidden", rows: 5_000)
        defer { standby.stop(); primary.stop() }
        try db.execute("CREATE ROLE blind LOGIN; GRANT CREATE, CONNECT ON DATABASE hidden TO blind; GRANT SELECT, UPDATE ON items TO blind")
        let roleURL = url + " user=blind"
        let closed = try backfill(["run", try jobFile(itemsJob(name: "blind")), "--database", roleURL, "--log-format", "json", "--max-runtime", "3s"])
        #expect(closed.code == 3, "\(closed.err.suffix(1500))")
        #expect(rowsDone(db, job: "blind") == 0)
        let waiting = closed.events.first { $0["event"] as? String == "throttle" && $0["state"] as? String == "waiting" }
        #expect(waiting?["reason"] as? String == "signal_unreadable")
        #expect((waiting?["detail"] as? String ?? "").contains("pg_read_all_stats"), "\(waiting ?? [:])")
        let open = try backfill(["run", try jobFile(itemsJob(name: "sighted", extra: "throttle: {fail_open: true}")), "--database", roleURL])
        #expect(open.code == 0, "\(open.err)")
        try expectExactlyOnce(db, rows: 5_000)
    }
}
