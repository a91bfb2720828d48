import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

@Suite("Parallel workers sharing one job through the checkpoint store")
struct WorkerTests {
    @Test("--workers 4 on 500k rows: every row exactly once, every range done, several workers busy")
    func fourWorkers() throws {
        let (url, db) = try itemsDatabase("workers4", rows: 500_000)
        let job = try jobFile(itemsJob(name: "w4"))
        let run = try backfill(["run", job, "--database", url, "--workers", "4", "--log-format", "json"])
        #expect(run.code == 0, "\(run.err)")
        try expectExactlyOnce(db, rows: 500_000)
        let workers = Set(run.events.filter { $0["event"] as? String == "batch" }.compactMap { $0["worker"] as? Int })
        #expect(workers.count >= 2, "workers that committed batches: \(workers)")
        let status = try backfill(["status", "w4", "--database", url, "--format", "json"])
        let job0 = try #require((try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [[String: Any]])?.first)
        let ranges = try #require(job0["range_list"] as? [[String: Any]])
        #expect(ranges.count >= 16)
        #expect(ranges.allSatisfy { $0["done"] as? Bool == true })
        #expect(ranges.compactMap { $0["rows_done"] as? Int }.reduce(0, +) == 500_000)
        #expect(job0["rows_done"] as? Int == 500_000)
    }

    @Test("a second process with --join shares the job: both write batches, every row once")
    func join() throws {
        let (url, db) = try itemsDatabase("join", rows: 200_000)
        let job = try jobFile(itemsJob(name: "joined", extra: "throttle: {max_rows_per_second: 50000}"))
        let first = try CLIProcess(["run", job, "--database", url, "--log-format", "json"])
        #expect(waitFor(20) { rowsDone(db, job: "joined") > 0 })
        let second = try CLIProcess(["run", job, "--database", url, "--join", "--log-format", "json"])
        #expect(first.wait(timeout: 60) == 0, "\(first.stderr)")
        #expect(second.wait(timeout: 60) == 0, "\(second.stderr)")
        let a = first.events.filter { $0["event"] as? String == "batch" }.count
        let b = second.events.filter { $0["event"] as? String == "batch" }.count
        #expect(a > 0 && b > 0, "batches: first \(a), joined \(b)")
        try expectExactlyOnce(db, rows: 200_000)
        let status = try backfill(["status", "joined", "--database", url])
        #expect(status.out.contains("RANGES"))
    }

    @Test("kill -9 of one of two processes: the other finishes the job; every row exactly once")
    func killOneOfTwo() throws {
        let (url, db) = try itemsDatabase("killone", rows: 200_000)
        let job = try jobFile(itemsJob(name: "survivor", extra: "throttle: {max_rows_per_second: 60000}"))
        let victim = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(20) { rowsDone(db, job: "survivor") > 0 })
        let survivor = try CLIProcess(["run", job, "--database", url, "--join", "--workers", "2"])
        Thread.sleep(forTimeInterval: 1)
        kill(victim.pid, SIGKILL)
        victim.wait()
        #expect(survivor.wait(timeout: 90) == 0, "\(survivor.stderr)")
        try expectExactlyOnce(db, rows: 200_000)
    }

    @Test("text and uuid keys split into ranges from the index's distribution; a growing table is covered")
    func keyTypesAndGrowth() throws {
        let url = try TestDatabases.create("splitkeys")
        let db = try Connection(url)
        try db.execute("""
            CREATE TABLE words (w text PRIMARY KEY, v int, writes int NOT NULL DEFAULT 0);
            INSERT INTO words (w) SELECT 'word-' || md5(g::text) FROM generate_series(1, 30000) g;
            INSERT INTO words (w) SELECT 'zzz-skewed-' || g FROM generate_series(1, 30000) g;
            CREATE TABLE things (id uuid PRIMARY KEY, v int, writes int NOT NULL DEFAULT 0);
            INSERT INTO things (id) SELECT md5(g::text)::uuid FROM generate_series(1, 40000) g;
            ANALYZE words; ANALYZE things;
            """)
        for (table, key, rows) in [("words", "w", 60000), ("things", "id", 40000)] {
            var options = RunOptions(database: url)
            options.workers = 3
            let spec = try JobSpec.parse(yaml: "name: \(table)\ntable: \(table)\nkey: [\(key)]\nset: {v: 1, writes: writes + 1}", file: "\(table).yaml")
            let outcome = Runner(spec: spec, options: options).run()
            #expect(outcome.exitCode == 0, "\(outcome)")
            #expect(try db.query("SELECT count(*) AS n FROM \(table) WHERE writes = 1 AND v = 1").first?["n"].int64 == Int64(rows))
            let ranges = try CheckpointStore().details(job: table, db: db).ranges
            #expect(ranges.count >= 12, "\(table): \(ranges.count) ranges")
            // The ranges tile the key space: each starts where another ends (work stealing appends
            // split-off ranges at the end of the numbering), the first at the start of the table,
            // the last open-ended; every bound is an existing key.
            var byLower: [[String]?: RangeStatus] = [:]
            for range in ranges { #expect(byLower.updateValue(range, forKey: range.lowerKey) == nil, "two ranges start at \(range.lowerKey ?? [])") }
            var chain: [RangeStatus] = []
            var lower: [String]? = nil
            while let next = byLower[lower], chain.count <= ranges.count {
                chain.append(next)
                guard let upper = next.upperKey else { break }
                lower = upper
            }
            #expect(chain.count == ranges.count && chain.last?.upperKey == nil, "the ranges do not tile the key space: \(ranges)")
            for bound in ranges.compactMap({ $0.upperKey?.first }) {
                #expect(try db.query("SELECT count(*) AS n FROM \(table) WHERE \(key)::text = $1", [.text(bound)]).first?["n"].int64 == 1)
            }
        }

        try seedItems(db, rows: 20_000)
        var options = RunOptions(database: url)
        options.workers = 2
        let spec = try JobSpec.parse(yaml: itemsJob(name: "growing") + "\nbatch: {size: 200, max: 400}", file: "g.yaml")
        let grown = Once()
        let outcome = Runner(spec: spec, options: options) { event in
            if event.kind == .batch, grown.first() {
                try? Connection(url).execute("INSERT INTO items (id, payload) SELECT g, 'late' FROM generate_series(20001, 25000) g")
            }
        }.run()
        #expect(outcome.exitCode == 0)
        try expectExactlyOnce(db, rows: 25_000)
    }

    @Test("max_rows_per_second is one budget for two processes (within 15 %)")
    func sharedRateLimit() throws {
        let (url, db) = try itemsDatabase("sharedrate", rows: 200_000)
        let job = try jobFile(itemsJob(name: "budget", extra: "throttle: {max_rows_per_second: 20000}"))
        let started = Date()
        let first = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(20) { rowsDone(db, job: "budget") > 0 })
        let second = try CLIProcess(["run", job, "--database", url, "--join"])
        #expect(first.wait(timeout: 60) == 0)
        #expect(second.wait(timeout: 60) == 0)
        let rate = 200_000 / Date().timeIntervalSince(started)
        #expect(abs(rate - 20_000) / 20_000 < 0.15, "\(rate) rows/s across two processes")
        try expectExactlyOnce(db, rows: 200_000)
    }
}

@Suite("Work stealing")
struct WorkStealingTests {
    @Test("splitting the largest open range keeps the ranges tiling the keys; the run still writes every row once")
    func split() throws {
        let (url, db) = try itemsDatabase("steal", rows: 40_000)
        let spec = try JobSpec.parse(yaml: itemsJob(name: "steal"), file: "steal.yaml")
        let plan = try Planner.plan(spec, on: db)
        let store = CheckpointStore()
        try store.migrate(db)
        #expect(try store.prepare(spec, plan: plan, workers: 1, restart: false, db: db) == .ready)
        let before = try store.details(job: "steal", db: db).ranges
        #expect(before.count == 4)
        #expect(try store.splitLargestRange("steal", plan: plan, minimumRows: 1000, db: db))
        let after = try store.details(job: "steal", db: db).ranges.sorted { ($0.lowerKey.map { Int($0[0]) ?? 0 } ?? 0) < ($1.lowerKey.map { Int($0[0]) ?? 0 } ?? 0) }
        #expect(after.count == 5)
        #expect(after.first?.lowerKey == nil && after.last?.upperKey == nil)
        for (previous, next) in zip(after, after.dropFirst()) { #expect(next.lowerKey == previous.upperKey) }
        // Nothing worth splitting below the minimum.
        #expect(try !store.splitLargestRange("steal", plan: plan, minimumRows: 1_000_000, db: db))
        let (outcome, _) = try runJob(itemsJob(name: "steal"), url: url)
        #expect(outcome.exitCode == 0, "\(outcome)")
        try expectExactlyOnce(db, rows: 40_000)
    }
}
