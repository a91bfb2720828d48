import BackfillTestSupport
import Dispatch
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// Runs `body` on a thread of its own (libpq calls block), returning its result.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> @Sendable () throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        box.set(Result { try body() })
        done.signal()
    }
    return {
        done.wait()
        return try box.get()
    }
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, Error>?
    func set(_ r: Result<T, Error>) { lock.withLock { result = r } }
    func get() throws -> T { try lock.withLock { result! }.get() }
}

func expectPostgresError(_ code: PostgresError.Code, _ body: () throws -> Void) -> PostgresError? {
    do {
        try body()
        Issue.record("expected SQLSTATE \(code), got success")
        return nil
    } catch let error as PostgresError {
        #expect(error.code == code, "\(error)")
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("PostgresClient against a real server")
struct ConnectionTests {
    @Test("every connection asks for TCP keepalives and tcp_user_timeout; the connection string's own values win")
    func deadPeerDefaults() throws {
        let url = try TestDatabases.create("keepalives")
        let plain = try Connection(url)
        #expect(plain.option("keepalives") == "1")
        #expect(plain.option("keepalives_idle") == "10")
        #expect(plain.option("keepalives_interval") == "5")
        #expect(plain.option("keepalives_count") == "3")
        #expect(plain.option("tcp_user_timeout") == "30000")
        let own = try Connection(url + " keepalives_idle=120 tcp_user_timeout=0")
        #expect(own.option("keepalives_idle") == "120")
        #expect(own.option("tcp_user_timeout") == "0")
        #expect(own.option("keepalives_count") == "3")
    }

    @Test("a pipeline prepares marked statements once on a direct connection, keeps them across a failed transaction, and never on a pooled one")
    func preparedPipeline() throws {
        let db = try Connection(try TestDatabases.create("prepared"))
        #expect(try db.isDirect())
        db.preparesStatements = true
        let add = Connection.Statement("SELECT $1::int + 1 AS n", [.int(1)], prepared: true)
        func named() throws -> Int64 {
            try db.query("SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = 'SELECT $1::int + 1 AS n'").first?["n"].int64 ?? -1
        }
        #expect(try db.pipeline([.init("BEGIN"), add, .init("COMMIT")]).map { $0.rows.first?["n"].int64 } == [nil, 2, nil])
        #expect(try named() == 1)
        var again = add
        again.parameters = [.int(41)]
        #expect(try db.pipeline([again]).first?.rows.first?["n"].int64 == 42)
        #expect(try named() == 1)
        // A failure later in the pipeline: the statement stays prepared, its result is not kept.
        _ = expectPostgresError(.init("22012")) { _ = try db.pipeline([.init("BEGIN"), add, .init("SELECT 1 / 0"), .init("COMMIT")]) }
        try db.execute("ROLLBACK")
        #expect(try named() == 1)
        db.preparesStatements = false
        #expect(try db.pipeline([Connection.Statement("SELECT $1::int * 3 AS n", [.int(3)], prepared: true)]).first?.rows.first?["n"].int64 == 9)
        #expect(try db.query("SELECT count(*) AS n FROM pg_prepared_statements").first?["n"].int64 == 1)
    }

    @Test("a pipeline's handles read each statement's own result, also when a statement is prepared on the way; built SQL runs with its values")
    func pipelineHandles() throws {
        let db = try Connection(try TestDatabases.create("handles"))
        db.preparesStatements = try db.isDirect()
        let lower = SQL.Slot("lower")
        let doubled: SQL = "SELECT \(lower)::int * 2 AS n, \(bind: "it's")::text AS t, \(lower)::int AS again"
        for value in [Int64(5), 6] {
            var pipeline = Pipeline([.init("BEGIN")])
            let first = pipeline.append(Connection.Statement(doubled.binding(lower, to: .int(value)), prepared: true))
            pipeline.append(.init("SELECT 0 AS n"))
            let second = pipeline.append(Connection.Statement("SELECT \(bind: value)::int + 100 AS n" as SQL, prepared: true))
            let commit = pipeline.append(.init("COMMIT"))
            let results = try db.run(pipeline)
            #expect(results[first].rows.first?["n"].int64 == value * 2)
            #expect(results[first].rows.first?["t"].string == "it's")
            #expect(results[first].rows.first?["again"].int64 == value)
            #expect(results[second].rows.first?["n"].int64 == value + 100)
            #expect(results[commit].commandTag == "COMMIT")
        }
        #expect(try db.query("SELECT count(*) AS n FROM pg_prepared_statements").first?["n"].int64 == 2)
    }

    @Test("typed values round-trip, including NULL and non-ASCII text")
    func roundTrip() throws {
        let db = try Connection(try TestDatabases.create("roundtrip"))
        let when = Date(timeIntervalSince1970: 1_790_000_000.25)
        let row = try #require(
            try db.query(
                "SELECT $1::bigint AS i, $2::float8 AS d, $3::bool AS b, $4::text AS s, $5::timestamptz AS t, $6::text AS n, $7::date AS day",
                [.int(-9_223_372_036_854_775_808), .double(2.5), .bool(true), .text("héllo ✓ 日本 \"q\" 'x'"), .date(when), .null, .text("2026-11-21")]
            ).first)
        #expect(row["i"].int64 == Int64.min)
        #expect(row["d"].double == 2.5)
        #expect(row["b"].bool == true)
        #expect(row["s"].string == "héllo ✓ 日本 \"q\" 'x'")
        #expect(row["t"].date == when)
        #expect(row["n"].isNull)
        #expect(row["n"].int64 == nil)
        #expect(row["day"].date == Date(timeIntervalSince1970: 1_795_219_200))
    }

    @Test("multi-statement execute, affected rows and transactions that roll back on throw")
    func executeAndTransactions() throws {
        let db = try Connection(try TestDatabases.create("tx"))
        try db.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');")
        #expect(try db.query("UPDATE t SET v = $1", ["z"]).affectedRows == 2)
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try db.transaction { c in
                try c.query("DELETE FROM t")
                throw Boom()
            }
        }
        #expect(try db.query("SELECT count(*) AS n FROM t").first?["n"].int64 == 2)
        try db.transaction { c in try c.query("DELETE FROM t WHERE id = $1", [1]) }
        #expect(try db.query("SELECT count(*) AS n FROM t").first?["n"].int64 == 1)
    }

    @Test("lock_timeout against a row held by another session is 55P03, retryable")
    func lockTimeout() throws {
        let url = try TestDatabases.create("locktimeout")
        let holder = try Connection(url)
        try holder.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0);")
        try holder.execute("BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE;")
        let waiter = try Connection(url)
        let error = expectPostgresError(.lockNotAvailable) {
            try waiter.execute("SET lock_timeout = '100ms'")
            try waiter.query("UPDATE t SET v = 1 WHERE id = 1")
        }
        #expect(error?.batchDisposition == .retry(.lockTimeout))
    }

    @Test("statement_timeout is 57014, retryable")
    func statementTimeout() throws {
        let db = try Connection(try TestDatabases.create("stmttimeout"))
        let error = expectPostgresError(.queryCanceled) {
            try db.execute("SET statement_timeout = '100ms'")
            try db.query("SELECT pg_sleep(5)")
        }
        #expect(error?.batchDisposition == .retry(.statementTimeout))
        #expect(db.isOpen)
    }

    @Test("a deadlock between two sessions is 40P01 for one of them, retryable")
    func deadlock() throws {
        let url = try TestDatabases.create("deadlock")
        let setup = try Connection(url)
        try setup.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0);")
        let bothLocked = DispatchGroup()
        bothLocked.enter()
        bothLocked.enter()
        func session(first: Int, second: Int) -> @Sendable () throws -> PostgresError? {
            onThread {
                let c = try Connection(url)
                try c.execute("SET deadlock_timeout = '100ms'; BEGIN")
                try c.query("UPDATE t SET v = v + 1 WHERE id = $1", [.int(Int64(first))])
                bothLocked.leave()
                bothLocked.wait()
                do {
                    try c.query("UPDATE t SET v = v + 1 WHERE id = $1", [.int(Int64(second))])
                    try c.execute("COMMIT")
                    return nil
                } catch let error as PostgresError {
                    try? c.execute("ROLLBACK")
                    return error
                }
            }
        }
        let a = session(first: 1, second: 2)
        let b = session(first: 2, second: 1)
        let errors = [try a(), try b()].compactMap { $0 }
        #expect(errors.count == 1)
        #expect(errors.first?.code == .deadlockDetected)
        #expect(errors.first?.batchDisposition == .retry(.deadlock))
    }

    @Test("a serialization failure is 40001, retryable")
    func serializationFailure() throws {
        let url = try TestDatabases.create("serializable")
        let a = try Connection(url)
        let b = try Connection(url)
        try a.execute("CREATE TABLE t (id int, v int); INSERT INTO t VALUES (1, 1);")
        for c in [a, b] {
            try c.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            try c.query("SELECT sum(v) FROM t")
        }
        try a.query("INSERT INTO t VALUES (2, 1)")
        try b.query("INSERT INTO t VALUES (3, 1)")
        try a.execute("COMMIT")
        let error = expectPostgresError(.serializationFailure) { try b.execute("COMMIT") }
        #expect(error?.batchDisposition == .retry(.serializationFailure))
    }

    @Test("a unique violation is permanent")
    func uniqueViolation() throws {
        let db = try Connection(try TestDatabases.create("unique"))
        try db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        let error = expectPostgresError(.uniqueViolation) { try db.query("INSERT INTO t VALUES ($1)", [1]) }
        #expect(error?.batchDisposition == .permanent)
        #expect(error?.detail?.contains("already exists") == true)
    }

    @Test("a terminated session reports a lost connection, retryable")
    func terminatedSession() throws {
        let url = try TestDatabases.create("terminate")
        let victim = try Connection(url)
        let admin = try Connection(url)
        try admin.query("SELECT pg_terminate_backend($1)", [.int(Int64(victim.backendPID))])
        Thread.sleep(forTimeInterval: 0.2)
        do {
            try victim.query("SELECT 1")
            Issue.record("query on a terminated session succeeded")
        } catch let error as PostgresError {
            #expect(error.isConnectionLost, "\(error)")
            #expect(error.batchDisposition == .retry(.connectionLost))
            #expect(error.code == .adminShutdown || error.code.errorClass == "08", "\(error)")
        }
        #expect(!victim.isOpen)
    }

    @Test("an unreachable server gives a clear error without the password")
    func unreachable() throws {
        let url = "postgresql://app:Sup3r-Secret-9@127.0.0.1:9/app"
        do {
            _ = try Connection(url, connectTimeoutSeconds: 3)
            Issue.record("connected to a closed port")
        } catch let error as PostgresError {
            #expect(error.code == .sqlclientUnableToEstablishSqlconnection)
            #expect(error.batchDisposition == .retry(.connectionLost))
            #expect(error.message.contains("127.0.0.1"))
            #expect(error.message.contains("port=9"))
            #expect(!"\(error)".contains("Sup3r-Secret-9"))
            #expect(error.hint?.contains("server is running") == true)
        }
    }

    @Test("a wrong password gives 28P01 and never shows the password")
    func badPassword() throws {
        guard let cluster = try TestDatabases.localCluster() else { return }
        let wrong = cluster.url().replacingOccurrences(of: cluster.password, with: "Wr0ng-Pa55word")
        do {
            _ = try Connection(wrong)
            Issue.record("connected with a wrong password")
        } catch let error as PostgresError {
            #expect(error.code == .invalidPassword)
            #expect(error.message.contains("password authentication failed"))
            #expect(!"\(error)".contains("Wr0ng-Pa55word"))
            #expect(error.batchDisposition == .permanent)
        }
        let right = try Connection(cluster.url())
        #expect(try right.query("SELECT 1 AS one").first?["one"].int64 == 1)
    }

    @Test("libpq defaults (PG* variables) are used when no connection string is given")
    func defaults() throws {
        guard let cluster = try TestDatabases.localCluster() else { return }
        setenv("PGHOST", cluster.socketDirectory, 1)
        setenv("PGPORT", String(cluster.port), 1)
        setenv("PGUSER", LocalPostgres.superuser, 1)
        defer { for name in ["PGHOST", "PGPORT", "PGUSER"] { unsetenv(name) } }
        let db = try Connection(nil, applicationName: "backfill:defaults")
        let row = try #require(try db.query("SELECT current_user AS u, current_setting('port') AS p").first)
        #expect(row["u"].string == "postgres")
        #expect(row["p"].string == String(cluster.port))
    }

    @Test("a cancel from another thread ends pg_sleep(30) within a second")
    func cancel() throws {
        let db = try Connection(try TestDatabases.create("cancel"))
        let token = try #require(db.makeCancelToken())
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.3)
            token.cancel()
        }
        let start = Date()
        let error = expectPostgresError(.queryCanceled) { try db.query("SELECT pg_sleep(30)") }
        #expect(Date().timeIntervalSince(start) < 1.3)
        #expect(error?.message.contains("cancel") == true)
        #expect(try db.query("SELECT 2 AS two").first?["two"].int64 == 2)
    }

    @Test("hostile identifiers are quoted, never executed")
    func hostileIdentifiers() throws {
        let db = try Connection(try TestDatabases.create("quoting"))
        try db.execute("CREATE TABLE x (id int)")
        for name in ["a\"b", "; DROP TABLE x", "Mixed Case", "ünï\"\"cödé"] {
            #expect(try db.escapeIdentifier(name) == Identifier.quote(name))
            let table = Identifier.quote(name)
            let column = Identifier.quote(name + " col")
            try db.execute("CREATE TABLE \(table) (\(column) text)")
            try db.query("INSERT INTO \(table) (\(column)) VALUES ($1)", [.text(name)])
            #expect(try db.query("SELECT \(column) AS v FROM \(table)").first?["v"].string == name)
        }
        #expect(try db.query("SELECT to_regclass('x') IS NOT NULL AS present").first?["present"].bool == true)
    }

    @Test("notices are captured, application_name is visible")
    func noticesAndApplicationName() throws {
        let db = try Connection(try TestDatabases.create("notices"), applicationName: "backfill:notices")
        try db.execute("DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$")
        let notices = db.drainNotices()
        #expect(notices.map(\.message) == ["hello from plpgsql"])
        #expect(notices.first?.severity == "NOTICE")
        #expect(db.drainNotices().isEmpty)
        let row = try db.query(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()").first
        #expect(row?["application_name"].string == "backfill:notices")
    }
}
