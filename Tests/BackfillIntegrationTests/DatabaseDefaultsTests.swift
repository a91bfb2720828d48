import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Synchronization
import Testing

/// A DBA's defaults (`ALTER DATABASE … SET`, `ALTER ROLE … SET`) do not change what Backfill's
/// statements mean or how long they may run: each setting at the database level and at the role
/// level, under live writers.
@Suite("Database and role defaults")
struct DatabaseDefaultsTests {
    enum Level: String, CaseIterable, Sendable { case database, role }

    /// A database with `items`, and the URL a run uses: the owner's for a database-level setting,
    /// a role of its own (which owns the database, so it may create the store) for a role-level one.
    /// `settings` are applied at `level` after the table is seeded.
    static func setUp(_ label: String, rows: Int, level: Level, settings: [String]) throws -> (url: String, db: Connection, runURL: String) {
        let (url, db) = try itemsDatabase(label, rows: rows)
        let database = try #require(try db.query("SELECT current_database() AS d").first?["d"].string)
        var runURL = url
        var target = "DATABASE \(Identifier.quote(database))"
        if level == .role {
            let role = "r_" + database
            try db.execute("""
                CREATE ROLE \(Identifier.quote(role)) LOGIN;
                ALTER DATABASE \(Identifier.quote(database)) OWNER TO \(Identifier.quote(role));
                ALTER TABLE items OWNER TO \(Identifier.quote(role));
                """)
            runURL = url + " user=\(role)"
            target = "ROLE \(Identifier.quote(role)) IN DATABASE \(Identifier.quote(database))"
        }
        for setting in settings { try db.execute("ALTER \(target) SET \(setting)") }
        return (url, db, runURL)
    }

    /// Writers that update random rows (not the job's columns) until stopped, through `url`.
    final class LiveWriters: @unchecked Sendable {
        private let stop = Atomic<Bool>(false)
        private let done = DispatchGroup()
        let writes = Atomic<Int>(0)

        init(url: String, count: Int, rows: Int) {
            for _ in 0..<count {
                done.enter()
                Thread { [self] in
                    defer { done.leave() }
                    guard let w = try? Connection(url) else { return }
                    while !stop.load(ordering: .relaxed) {
                        if (try? w.query("UPDATE items SET touched = touched + 1 WHERE id = $1", [.int(Int64.random(in: 1...Int64(rows)))])) != nil {
                            writes.add(1, ordering: .relaxed)
                        }
                    }
                }.start()
            }
        }

        func finish() {
            stop.store(true, ordering: .relaxed)
            done.wait()
        }
    }

    static func fillJob(_ name: String) -> String { itemsJob(name: name, extra: "where: filled IS NULL") }

    @Test("statement_timeout shorter than a scan of the table: the run finishes, the end check included", arguments: Level.allCases)
    func statementTimeout(level: Level) throws {
        let rows = 400_000
        let (_, db, runURL) = try Self.setUp("stmt_\(level)", rows: rows, level: level, settings: ["statement_timeout = '15ms'"])
        // The setting really bounds a scan of this table (else this test could not fail).
        let probe = try Connection(runURL)
        #expect(throws: PostgresError.self) { try probe.query("SELECT count(*) FROM items WHERE filled IS NULL") }
        let writers = LiveWriters(url: runURL, count: 2, rows: rows)
        let run = try backfill(["run", try jobFile(Self.fillJob("stmt")), "--database", runURL, "--log-format", "json"])
        writers.finish()
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: rows)
        #expect(writers.writes.load(ordering: .relaxed) > 0)
        let verify = try backfill(["verify", try jobFile(Self.fillJob("stmt")), "--database", runURL])
        #expect(verify.code == 0, "\(verify.out) \(verify.err)")
    }

    @Test("default_transaction_isolation serializable or repeatable read, under live writers: the run finishes, every row once",
          arguments: [Level.database, .role], ["serializable", "repeatable read"])
    func isolation(level: Level, isolation: String) throws {
        let rows = 60_000
        let (_, db, runURL) = try Self.setUp("iso_\(level)_\(isolation.prefix(3))", rows: rows, level: level,
                                             settings: ["default_transaction_isolation = '\(isolation)'"])
        let writers = LiveWriters(url: runURL, count: 2, rows: rows)
        let run = try backfill(["run", try jobFile(itemsJob(name: "iso", extra: "where: filled IS NULL\nbatch: {size: 500, target_ms: 20}")), "--database", runURL])
        writers.finish()
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: rows)
    }

    @Test("serializable by default: a sql action still does not overwrite an application's write that lands during the batch")
    func isolationSQLAction() throws {
        let (_, db, runURL) = try Self.setUp("iso_sql", rows: 2_000, level: .database, settings: ["default_transaction_isolation = 'serializable'"])
        try expectSQLActionKeepsApplicationWrite(url: runURL, db: db, begin: "BEGIN ISOLATION LEVEL READ COMMITTED")
    }

    @Test("default_transaction_read_only on: exit 2 naming it and the fix, nothing created", arguments: Level.allCases)
    func readOnly(level: Level) throws {
        let (_, db, runURL) = try Self.setUp("ro_\(level)", rows: 1_000, level: level, settings: ["default_transaction_read_only = on"])
        let run = try backfill(["run", try jobFile(Self.fillJob("ro")), "--database", runURL])
        #expect(run.code == 2, "\(run.err)")
        #expect(run.err.contains("default_transaction_read_only"), "\(run.err)")
        #expect(run.err.contains("SET default_transaction_read_only = off"), "\(run.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true)
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE filled IS NOT NULL").first?["n"].int64 == 0)
    }

    @Test("lock_timeout 5 ms, idle_in_transaction_session_timeout 20 ms, search_path '': the run finishes, every row once", arguments: Level.allCases)
    func shortDefaults(level: Level) throws {
        let rows = 50_000
        let (_, db, runURL) = try Self.setUp("short_\(level)", rows: rows, level: level,
                                             settings: ["lock_timeout = '5ms'", "idle_in_transaction_session_timeout = '20ms'", "search_path = ''"])
        let writers = LiveWriters(url: runURL, count: 2, rows: rows)
        let run = try backfill(["run", try jobFile(itemsJob(name: "short", table: "public.items", extra: "where: filled IS NULL")), "--database", runURL])
        writers.finish()
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: rows)
    }

    @Test("a role with CONNECTION LIMIT 3 and workers: 4: the workers that fit run, the run says so and finishes, every row once")
    func connectionLimit() throws {
        let rows = 60_000
        let (url, db, _) = try Self.setUp("connlimit", rows: rows, level: .role, settings: [])
        let role = try #require(try db.query("SELECT 'r_' || current_database() AS r").first?["r"].string)
        try db.execute("ALTER ROLE \(Identifier.quote(role)) CONNECTION LIMIT 3")
        let runURL = url + " user=\(role)"
        let job = try jobFile(Self.fillJob("limit") + "\nworkers: 4")
        let plan = try backfill(["plan", job, "--database", runURL])
        #expect(plan.code == 0, "\(plan.err)")
        #expect(plan.out.contains("connections: 7 = 4 workers + the coordinator + the lease + the watchdog"), "\(plan.out)")
        #expect(plan.out.contains("CONNECTION LIMIT 3, leaving 2 free: 1 of 4 workers run, and the watchdog is off"), "\(plan.out)")
        let run = try backfill(["run", job, "--database", runURL, "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: rows)
        let budget = try #require(run.events.first { $0["event"] as? String == "connections" }, "\(run.err)")
        #expect(budget["workers"] as? Int == 1, "\(budget)")
        #expect((budget["message"] as? String)?.contains("CONNECTION LIMIT 3") == true, "\(budget)")
        #expect(!run.err.contains("too many connections"), "\(run.err)")
    }

    @Test("through PgBouncer in transaction mode, a database statement_timeout of 15 ms and repeatable read: the run finishes, and no pin stays on a pooled server session")
    func pooled() throws {
        let cluster = try #require(try TestDatabases.localCluster(), "needs the local cluster")
        let bouncer = try LocalPgBouncer(in: cluster, mode: .transaction)
        defer { bouncer.stop() }
        let rows = 400_000
        let direct = try cluster.createDatabase("defaults_pooled")
        let db = try Connection(direct)
        try seedItems(db, rows: rows)
        try db.execute("ALTER DATABASE defaults_pooled SET statement_timeout = '15ms'; ALTER DATABASE defaults_pooled SET default_transaction_isolation = 'repeatable read'")
        let pooled = bouncer.conninfo(database: "defaults_pooled")
        let run = try backfill(["run", try jobFile(Self.fillJob("pooled")), "--database", pooled])
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: rows)
        // Every server session the pool holds still has the database's own default.
        let client = try Connection(pooled)
        for _ in 0..<10 {
            #expect(try client.query("SHOW statement_timeout").first?[0].string == "15ms")
            #expect(try client.query("SHOW default_transaction_isolation").first?[0].string == "repeatable read")
        }
    }

    @Test("a role with CONNECTION LIMIT 1: no worker fits, exit 2 naming the limit, nothing created")
    func connectionLimitTooLow() throws {
        let (url, db, _) = try Self.setUp("connlow", rows: 1_000, level: .role, settings: [])
        let role = try #require(try db.query("SELECT 'r_' || current_database() AS r").first?["r"].string)
        try db.execute("ALTER ROLE \(Identifier.quote(role)) CONNECTION LIMIT 1")
        let run = try backfill(["run", try jobFile(Self.fillJob("low")), "--database", url + " user=\(role)"])
        #expect(run.code == 2, "\(run.err)")
        #expect(run.err.contains("CONNECTION LIMIT 1"), "\(run.err)")
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true)
    }
}
