import BackfillCore
import BackfillTestSupport
import Foundation
import Synchronization
import PostgresClient
import Testing

/// `walk: physical` on tables without a unique key (docs/physical-walk.md): every row changed
/// exactly once under live non-HOT updates, kill -9 and reruns; the `where` rule refused at its
/// first batch; refusals before anything is stored; purges under inserts; several workers and
/// processes; partitioned tables.
@Suite("Physical walk")
struct PhysicalWalkTests {
    /// `logs`: no unique index; `origin_id` names a row (not enforced), `hits` is what live
    /// writers update (indexed, so their updates are not HOT and move rows across the heap).
    func logsDatabase(_ label: String, rows: Int) throws -> (url: String, db: Connection) {
        let url = try TestDatabases.create(label)
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE logs (origin_id bigint NOT NULL, hits int NOT NULL DEFAULT 0, payload text NOT NULL, done boolean, writes int NOT NULL DEFAULT 0);
            INSERT INTO logs (origin_id, payload) SELECT g, md5(g::text) FROM generate_series(1, \(rows)) g;
            CREATE INDEX ON logs (origin_id);
            CREATE INDEX ON logs (hits);
            ANALYZE logs;
            """)
        return (url, db)
    }

    func logsJob(_ name: String, extra: String = "") -> String {
        """
        name: \(name)
        table: logs
        walk: physical
        where: done IS NOT TRUE
        set:
          done: "true"
          writes: writes + 1
        \(extra)
        """
    }

    /// Every row of `logs` once (`rows` of them, each `origin_id` once, each written once).
    func expectLogsOnce(_ db: Connection, rows: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let row = try #require(try db.query(
            "SELECT count(*) AS n, count(DISTINCT origin_id) AS origins, count(*) FILTER (WHERE writes = 1 AND done) AS once, max(writes) AS most FROM logs").first,
            sourceLocation: sourceLocation)
        #expect(row["n"].int64 == Int64(rows), sourceLocation: sourceLocation)
        #expect(row["origins"].int64 == Int64(rows), sourceLocation: sourceLocation)
        #expect(row["once"].int64 == Int64(rows), "most writes of a row: \(row["most"])", sourceLocation: sourceLocation)
    }

    /// A run's output without its batch and throttle events.
    func notable(_ run: CLIProcess) -> String {
        run.stderr.split(separator: "\n").filter { !$0.contains(#""event":"batch""#) && !$0.contains(#""event":"throttle""#) }.suffix(20).joined(separator: "\n")
    }

    /// Writers updating random rows' `hits` (non-HOT) until `stop`.
    final class Writers: @unchecked Sendable {
        private let stopped = Mutex(false)
        private var threads: [Thread] = []
        let updates = Mutex(0)

        init(url: String, count: Int, rows: Int, vacuumAfter: Double? = nil) {
            for i in 0..<count {
                let thread = Thread { [self] in
                    guard let db = try? Connection(url) else { return }
                    let began = Date()
                    var vacuumed = false
                    while !stopped.withLock({ $0 }) {
                        if i == 0, let after = vacuumAfter, !vacuumed, Date().timeIntervalSince(began) > after {
                            // Free space behind the walk: the next moved versions land there.
                            _ = try? db.execute("VACUUM logs")
                            vacuumed = true
                        }
                        if (try? db.query("UPDATE logs SET hits = hits + 1 WHERE origin_id = $1", [.int(Int64.random(in: 1...Int64(rows)))])) != nil {
                            updates.withLock { $0 += 1 }
                        }
                    }
                }
                threads.append(thread)
                thread.start()
            }
        }

        func stop() {
            stopped.withLock { $0 = true }
            Thread.sleep(forTimeInterval: 0.3)
        }
    }

    @Test("500k keyless rows, 4 live non-HOT writers and a VACUUM, kill -9 mid-run, run again: every row changed exactly once")
    func killNineUnderLiveUpdates() throws {
        let rows = 500_000
        let (url, db) = try logsDatabase("phys_kill9", rows: rows)
        let job = try jobFile(logsJob("phys-kill9", extra: "throttle: {max_rows_per_second: 100000}"))
        let writers = Writers(url: url, count: 4, rows: rows, vacuumAfter: 1)
        let first = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(60) { rowsDone(db, job: "phys-kill9") >= 150_000 })
        kill(first.pid, SIGKILL)
        first.wait()
        let partial = rowsDone(db, job: "phys-kill9")
        #expect(partial > 0 && partial < Int64(rows))
        // What the killed run committed is exactly what it changed.
        #expect(try db.query("SELECT count(*) AS n FROM logs WHERE done").first?["n"].int64 == partial)

        let status = try backfill(["status", "phys-kill9", "--database", url])
        #expect(status.out.contains("page "), "\(status.out)")
        let second = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        Thread.sleep(forTimeInterval: 1)
        writers.stop()
        #expect(second.wait(timeout: 120) == 0, "\(notable(second))")
        #expect(writers.updates.withLock { $0 } > 100)
        try expectLogsOnce(db, rows: rows)
        let batches = second.events.filter { $0["event"] as? String == "batch" }
        #expect(batches.allSatisfy { $0["bound"] as? String == "pages" })
        #expect(try backfill(["verify", job, "--database", url]).code == 0)

        // A key walk of the same table is still refused, with the index to create.
        let keyed = try backfill(["plan", try jobFile(logsJob("phys-keyed").replacingOccurrences(of: "walk: physical", with: "key: [origin_id]")), "--database", url])
        #expect(keyed.code == 2)
        #expect(keyed.err.contains("CREATE UNIQUE INDEX CONCURRENTLY"), "\(keyed.err)")
    }

    @Test("a `set` that leaves `where` true: the first batch rolls back, exit 1 naming where and set, nothing changed; on_error skip quarantines nothing")
    func setLeavingWhereTrue() throws {
        let (url, db) = try logsDatabase("phys_still", rows: 20_000)
        for (name, extra) in [("phys-still", ""), ("phys-still-skip", "on_error: {action: skip}")] {
            let job = try jobFile("""
                name: \(name)
                table: logs
                walk: physical
                where: hits < 10
                set:
                  hits: hits + 1
                \(extra)
                """)
            let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
            #expect(run.code == 1, "\(run.err)")
            #expect(run.err.contains("ranges_batch_leaves_where_false"), "\(run.err)")
            #expect(run.err.contains("hits < 10") && run.err.contains("hits + 1"), "\(run.err)")
            #expect(try db.query("SELECT count(*) AS n FROM logs WHERE hits <> 0").first?["n"].int64 == 0)
            #expect(try db.query("SELECT coalesce(sum(rows_done), 0)::bigint AS n FROM backfill.ranges WHERE job = $1", [.text(name)]).first?["n"].int64 == 0)
            #expect(try db.query("SELECT count(*) AS n FROM backfill.bad_rows WHERE job = $1", [.text(name)]).first?["n"].int64 == 0)
        }
    }

    @Test("on_error skip: bad rows are isolated by ctid and quarantined, every other row changed once; stop names the bad row's ctid")
    func badRows() throws {
        let (url, db) = try logsDatabase("phys_bad", rows: 30_000)
        try db.execute("ALTER TABLE logs ADD COLUMN n int; UPDATE logs SET payload = origin_id::text; UPDATE logs SET payload = 'oops' WHERE origin_id IN (7, 12345, 29999)")
        try db.execute("VACUUM logs")
        let yaml = """
            table: logs
            walk: physical
            where: done IS NOT TRUE
            set:
              done: "true"
              n: payload::int
              writes: writes + 1
            """
        let first = try #require(try db.query("SELECT ctid::text AS c FROM logs WHERE payload = 'oops' ORDER BY ctid LIMIT 1").first?["c"].string)
        let stop = try backfill(["run", try jobFile("name: phys-bad-stop\n" + yaml), "--database", url])
        #expect(stop.code == 1 && stop.err.contains("22P02") && stop.err.contains(first), "\(first): \(stop.err)")
        try db.execute("UPDATE logs SET done = NULL, writes = 0, n = NULL")
        let run = try backfill(["run", try jobFile("name: phys-bad\n" + yaml + "\non_error: {action: skip}"), "--database", url])
        #expect(run.code == 1 && run.err.contains("done with 3 bad rows"), "\(run.err)")
        let row = try #require(try db.query("SELECT count(*) FILTER (WHERE writes = 1 AND n = origin_id) AS good, count(*) FILTER (WHERE writes = 0) AS untouched, max(writes) AS most FROM logs").first)
        #expect(row["good"].int64 == 29_997 && row["untouched"].int64 == 3 && row["most"].int64 == 1, "\(row)")
        let listed = try backfill(["bad-rows", "phys-bad", "--database", url])
        let ctids = try db.query("SELECT ctid::text AS c FROM logs WHERE payload = 'oops'").rows.compactMap { $0["c"].string }
        #expect(ctids.count == 3 && ctids.allSatisfy { listed.out.contains($0) }, "\(ctids) \(listed.out)")
    }

    @Test("refused with exit 2 and nothing stored: no where, sql, key with walk, batch.size, a published table without replica identity")
    func refusals() throws {
        let (url, db) = try logsDatabase("phys_refuse", rows: 1000)
        let cases: [(yaml: String, field: String)] = [
            ("name: r1\ntable: logs\nwalk: physical\nset:\n  done: \"true\"", "where"),
            ("name: r2\ntable: logs\nwalk: physical\nwhere: done IS NOT TRUE\nsql: UPDATE logs SET done = true FROM batch", "sql"),
            ("name: r3\ntable: logs\nwalk: physical\nkey: [origin_id]\nwhere: done IS NOT TRUE\nset:\n  done: \"true\"", "key"),
            ("name: r4\ntable: logs\nwalk: physical\nwhere: done IS NOT TRUE\nset:\n  done: \"true\"\nbatch: {size: 100}", "batch.size"),
        ]
        for (yaml, field) in cases {
            let job = try jobFile(yaml)
            let run = try backfill(["run", job, "--database", url])
            #expect(run.code == 2, "\(yaml): \(run.err)")
            #expect(run.err.contains(job) && run.err.contains(field), "\(run.err)")
        }
        try db.execute("CREATE PUBLICATION logs_pub FOR TABLE logs")
        let published = try backfill(["run", try jobFile(logsJob("r5")), "--database", url])
        #expect(published.code == 2, "\(published.err)")
        #expect(published.err.contains("REPLICA IDENTITY FULL"), "\(published.err)")
        #expect(try db.query("SELECT count(*) AS n FROM logs WHERE done OR writes > 0").first?["n"].int64 == 0)
        let status = try backfill(["status", "--database", url])
        #expect(status.out.contains("no jobs") || status.err.contains("no checkpoint store"), "\(status.out) \(status.err)")
        // With a replica identity the same job runs.
        try db.execute("ALTER TABLE logs REPLICA IDENTITY FULL")
        #expect(try backfill(["run", try jobFile(logsJob("r6")), "--database", url]).code == 0)
        try expectLogsOnce(db, rows: 1000)
    }

    @Test("a batched purge (action: delete) of a keyless table under live inserts on both sides of the cutoff")
    func purgeUnderInserts() throws {
        let url = try TestDatabases.create("phys_purge")
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE events (created_at timestamptz NOT NULL, old boolean NOT NULL, payload text NOT NULL);
            INSERT INTO events SELECT CASE WHEN g % 2 = 0 THEN '2020-01-01'::timestamptz ELSE '2030-01-01'::timestamptz END, g % 2 = 0, md5(g::text) FROM generate_series(1, 200000) g;
            ANALYZE events;
            """)
        let inserted = Mutex((old: 0, new: 0))
        let stop = Mutex(false)
        let inserter = Thread {
            guard let w = try? Connection(url) else { return }
            while !stop.withLock({ $0 }) {
                let old = Bool.random()
                if (try? w.query("INSERT INTO events VALUES ($1::timestamptz, $2, 'live')", [.text(old ? "2020-06-01" : "2030-06-01"), .bool(old)])) != nil {
                    inserted.withLock { old ? ($0.old += 1) : ($0.new += 1) }
                }
            }
        }
        inserter.start()
        let job = try jobFile("""
            name: phys-purge
            table: events
            walk: physical
            where: created_at < '2025-01-01'
            action: delete
            throttle: {max_rows_per_second: 50000}
            """)
        let run = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        Thread.sleep(forTimeInterval: 1.5)
        stop.withLock { $0 = true }
        #expect(run.wait(timeout: 120) == 0, "\(notable(run))")
        let counts = inserted.withLock { $0 }
        #expect(counts.old > 0 && counts.new > 0)
        let row = try #require(try db.query("SELECT count(*) FILTER (WHERE old) AS old, count(*) FILTER (WHERE NOT old) AS new FROM events").first)
        #expect(row["old"].int64 == 0)
        #expect(row["new"].int64 == Int64(100_000 + counts.new))
        let deleted = run.events.first { $0["event"] as? String == "done" }?["rows_done"] as? Int
        #expect(deleted == 100_000 + counts.old)
    }

    @Test("a nightly physical purge (repeat: true): rows that turn old behind the walk are left for the next night, which starts pass 2 over every page, the freed ones too")
    func nightlyPurge() throws {
        let url = try TestDatabases.create("phys_nightly")
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE events (created_at timestamptz NOT NULL, old boolean NOT NULL, payload text NOT NULL) WITH (autovacuum_enabled = false);
            INSERT INTO events SELECT CASE WHEN g % 2 = 0 THEN '2020-01-01'::timestamptz ELSE '2030-01-01'::timestamptz END, g % 2 = 0, md5(g::text) FROM generate_series(1, 100000) g;
            ANALYZE events;
            """)
        let job = try jobFile("""
            name: phys-nightly
            table: events
            walk: physical
            where: created_at < '2025-01-01'
            action: delete
            batch: {pages: 16, max_pages: 16}
            repeat: true
            """)
        let pages = try #require(try db.query("SELECT pg_relation_size('events') / 8192 AS p").first?["p"].int64)
        // Night 1: once the walk is past the middle page, rows on the first 50 pages turn old.
        let turnedBehind = Once()
        let night1 = Runner(spec: try JobSpec.load(path: job), options: RunOptions(database: url)) { event in
            guard event.kind == .batch, case .strings(let key) = event["last_key"],
                  let page = BatchStatements.page(of: key), page > pages / 2, turnedBehind.first()
            else { return }
            try? Connection(url).execute("UPDATE events SET created_at = '2020-02-02', old = true WHERE NOT old AND ctid < '(50,0)'")
        }.run()
        #expect(night1.exitCode == 0, "\(night1)")
        #expect(!turnedBehind.first(), "the walk never passed page \(pages / 2)")
        let behind = try #require(try db.query("SELECT count(*) AS n FROM events WHERE old").first?["n"].int64)
        #expect(behind > 0, "rows that turned old behind the walk are left for the next night")
        // Night 2: VACUUM frees the deleted rows' space at the start of the heap; old and new
        // rows inserted now land there, behind where night 1's walk began.
        try db.execute("VACUUM events")
        try db.execute("INSERT INTO events SELECT CASE WHEN g % 2 = 0 THEN '2020-03-03'::timestamptz ELSE '2030-03-03'::timestamptz END, g % 2 = 0, 'night 2' FROM generate_series(1, 20000) g")
        #expect(try db.query("SELECT count(*) AS n FROM events WHERE payload = 'night 2' AND ctid < '(100,0)'").first?["n"].int64 ?? 0 > 0,
                "the inserted rows reuse the freed pages")
        let newRows = try #require(try db.query("SELECT count(*) AS n FROM events WHERE NOT old").first?["n"].int64)
        let night2 = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(night2.wait(timeout: 120) == 0, "\(notable(night2))")
        let done = night2.events.first { $0["event"] as? String == "done" }
        #expect(done?["run_rows"] as? Int == Int(behind) + 10_000, "\(notable(night2))")
        let left = try #require(try db.query("SELECT count(*) FILTER (WHERE old) AS old, count(*) FILTER (WHERE NOT old) AS new FROM events").first)
        #expect(left["old"].int64 == 0)
        #expect(left["new"].int64 == newRows)
        let status = try backfill(["status", "phys-nightly", "--database", url, "--format", "json"]).out
        #expect(status.contains("\"pass\":2") && status.contains("\"state\":\"done\"") && status.contains("\"walk\":\"physical\""), "\(status)")
    }

    @Test("two workers and a --join process share a physical walk; kill -9 of the joined one; every row once")
    func workersAndJoin() throws {
        let rows = 300_000
        let (url, db) = try logsDatabase("phys_join", rows: rows)
        let job = try jobFile(logsJob("phys-join", extra: "throttle: {max_rows_per_second: 60000}\nbatch: {max_pages: 64}"))
        let first = try CLIProcess(["run", job, "--database", url, "--workers", "2", "--log-format", "json"])
        #expect(waitFor(30) { rowsDone(db, job: "phys-join") > 0 })
        let joined = try CLIProcess(["run", job, "--database", url, "--join", "--log-format", "json"])
        #expect(waitFor(30) { joined.events.contains { $0["event"] as? String == "batch" } })
        kill(joined.pid, SIGKILL)
        joined.wait()
        let second = try CLIProcess(["run", job, "--database", url, "--join", "--log-format", "json"])
        #expect(first.wait(timeout: 120) == 0, "\(notable(first))")
        #expect(second.wait(timeout: 120) == 0, "\(notable(second))")
        let workers = Set(first.events.filter { $0["event"] as? String == "batch" }.compactMap { $0["worker"] as? Int })
        #expect(workers.count == 2, "workers with batches: \(workers)")
        try expectLogsOnce(db, rows: rows)
    }

    @Test("a partitioned table, leaves of unequal size and a default: every row once, under a role that turns TID scans off; `set` on the partition key exits 2")
    func partitioned() throws {
        let url = try TestDatabases.create("phys_parts")
        let db = try Connection(url)
        try db.execute(
            """
            CREATE TABLE logs (origin_id bigint NOT NULL, region int NOT NULL, hits int NOT NULL DEFAULT 0, payload text NOT NULL, done boolean, writes int NOT NULL DEFAULT 0) PARTITION BY LIST (region);
            CREATE TABLE logs_1 PARTITION OF logs FOR VALUES IN (1);
            CREATE TABLE logs_2 PARTITION OF logs FOR VALUES IN (2);
            CREATE TABLE logs_3 PARTITION OF logs FOR VALUES IN (3);
            CREATE TABLE logs_other PARTITION OF logs DEFAULT;
            INSERT INTO logs (origin_id, region, payload)
                SELECT g, CASE WHEN g % 10 < 6 THEN 1 WHEN g % 10 < 9 THEN 2 WHEN g % 100 < 99 THEN 3 ELSE 7 END, md5(g::text) FROM generate_series(1, 100000) g;
            CREATE INDEX ON logs (hits);
            ANALYZE logs;
            ALTER DATABASE \(Identifier.quote(try db.query("SELECT current_database() AS d").first?["d"].string ?? "")) SET enable_tidscan = off;
            """)
        let job = try jobFile(logsJob("phys-parts", extra: "batch: {pages: 4, max_pages: 32}"))
        let plan = try backfill(["plan", job, "--database", url])
        #expect(plan.code == 0, "\(plan.err)")
        for leaf in ["logs_1", "logs_2", "logs_3", "logs_other"] { #expect(plan.out.contains("Tid Range Scan on public.\(leaf)"), "\(plan.out)") }
        let run = try backfill(["run", job, "--database", url, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err.suffix(3000))")
        try expectLogsOnce(db, rows: 100_000)
        // Partition after partition: each range holds the pages of one partition, in tree order.
        let heaps = try db.query("SELECT relation FROM backfill.ranges WHERE job = 'phys-parts' ORDER BY range_id").rows.compactMap { $0["relation"].string }
        #expect(heaps.reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } } == ["logs_1", "logs_2", "logs_3", "logs_other"].map { "\"public\".\"\($0)\"" }, "\(heaps)")

        let moving = try backfill(["run", try jobFile("""
            name: phys-parts-move
            table: logs
            walk: physical
            where: region = 2
            set:
              region: "3"
            """), "--database", url])
        #expect(moving.code == 2, "\(moving.err)")
        #expect(moving.err.contains("partition key"), "\(moving.err)")
    }
}
