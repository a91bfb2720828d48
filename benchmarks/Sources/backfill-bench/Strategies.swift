import BackfillCore
import Foundation
import Synchronization
import PostgresClient

/// The ways to fill `balance_cents` that the benchmark compares.
enum Strategy: String, CaseIterable, Codable, Sendable {
    case singleUpdate = "single-update"
    case offset = "offset-5k"
    case cte = "cte-1k"
    case backfillDefaults = "backfill-defaults"
    case backfillTuned = "backfill-tuned"
    case backfillWorkers = "backfill-2-workers"
    case loop
    case backfillPhysical = "backfill-physical"

    /// The table's title; the loop's names its key span `loopBatch`.
    func title(loopBatch: Int) -> String {
        switch self {
        case .singleUpdate: "1. one UPDATE, one transaction"
        case .offset: "2. OFFSET pagination, 5,000/batch"
        case .cte: "3. row-list CTE, 1,000/batch (pgroll, reshape)"
        case .backfillDefaults: "4. Backfill, job defaults"
        case .backfillTuned: "5. Backfill, tuned (\(Self.tunedSettings))"
        case .backfillWorkers: "6. Backfill, defaults, 2 workers"
        case .loop: "7. hand-written loop (psql), keys \(loopBatch)/statement"
        case .backfillPhysical: "8. Backfill, walk: physical (heap pages), defaults"
        }
    }

    static let setExpression = "(balance * 100)::bigint"
    static let whereClause = "balance_cents IS NULL"
    static let tunedSettings = "target_ms 100, max 100000"

    static func jobYAML(_ strategy: Strategy, table: BenchTable = .bigint) -> String {
        var yaml = """
            name: bench-\(strategy.rawValue)
            table: \(table.name)
            \(strategy == .backfillPhysical ? "walk: physical" : "key: [id]")
            where: \(whereClause)
            set:
              balance_cents: '\(setExpression)'

            """
        if strategy == .backfillTuned { yaml += "batch: {target_ms: 100, max: 100000}\n" }
        if strategy == .backfillWorkers { yaml += "workers: 2\n" }
        return yaml
    }
}

/// A table the strategies fill: `bench_accounts` with the dense bigint keys 1…rows, or its twin
/// keyed by random uuids (`gen_random_uuid()`, so the rows go in in random key order).
enum BenchTable: String, Sendable {
    case bigint = "bench_accounts"
    case uuid = "bench_accounts_uuid"

    var name: String { rawValue }

    /// The `id` column's definition.
    var idColumn: String { self == .bigint ? "id bigint PRIMARY KEY" : "id uuid PRIMARY KEY DEFAULT gen_random_uuid()" }

    /// The `id` column and its value from `generate_series` in the seeding INSERT; none where the default gives it.
    var idInsert: (column: String, value: String) { self == .bigint ? ("id, ", "g, ") : ("", "") }
}

/// One batch's wall time, where in the key range it ended (0…1), and its size in keys.
struct BatchSample: Sendable {
    var ms: Double
    var position: Double
    var size: Int
}

/// What a strategy's run produced: its batches, and for Backfill the seconds from its last batch
/// to `done` (the end-of-job check that no row still matches `where`, a full scan).
struct Execution: Sendable {
    var samples: [BatchSample]
    var verifySeconds: Double?
}

/// Runs a strategy to completion on `table`, returning its batches; the loop walks `loopBatch` keys a statement.
func execute(_ strategy: Strategy, table benchTable: BenchTable, conninfo: String, rows: Int, loopBatch: Int) throws -> Execution {
    let table = benchTable.name
    let set = "balance_cents = \(Strategy.setExpression)"
    let filter = Strategy.whereClause
    func timed(_ body: () throws -> Void) rethrows -> Double {
        let t0 = ContinuousClock.now
        try body()
        let d = (ContinuousClock.now - t0).components
        return Double(d.seconds) * 1000 + Double(d.attoseconds) / 1e15
    }
    switch strategy {
    case .singleUpdate:
        let db = try Connection(conninfo, applicationName: "backfill-bench")
        let ms = try timed { try db.query("UPDATE \(table) SET \(set) WHERE \(filter)") }
        return Execution(samples: [BatchSample(ms: ms, position: 1, size: rows)])
    case .offset:
        let db = try Connection(conninfo, applicationName: "backfill-bench")
        var samples: [BatchSample] = []
        var offset = 0
        while offset < rows {
            let o = offset
            let ms = try timed {
                try db.query("UPDATE \(table) SET \(set) WHERE id IN (SELECT id FROM \(table) ORDER BY id OFFSET $1 LIMIT 5000) AND \(filter)", [.int(Int64(o))])
            }
            offset += 5000
            samples.append(BatchSample(ms: ms, position: Double(min(offset, rows)) / Double(rows), size: 5000))
        }
        return Execution(samples: samples)
    case .cte:
        let db = try Connection(conninfo, applicationName: "backfill-bench")
        var samples: [BatchSample] = []
        var last: Int64 = 0
        while true {
            var next: Int64?
            let l = last
            let ms = try timed {
                next = try db.query(
                    "WITH batch AS (SELECT id FROM \(table) WHERE id > $1 AND \(filter) ORDER BY id LIMIT 1000), upd AS (UPDATE \(table) t SET \(set) FROM batch WHERE t.id = batch.id) SELECT max(id) AS last FROM batch",
                    [.int(l)]).first?["last"].int64
            }
            guard let next else { break }
            last = next
            samples.append(BatchSample(ms: ms, position: Double(next) / Double(rows), size: 1000))
        }
        return Execution(samples: samples)
    case .loop:
        // As a shell loop of psql would: autocommit, literal keys (a custom plan per statement).
        let db = try Connection(conninfo, applicationName: "backfill-bench")
        try db.execute("SET enable_seqscan = off")
        let top = try db.query("SELECT max(id) AS m FROM \(table)").first?["m"].int64 ?? 0
        var samples: [BatchSample] = []
        var a: Int64 = 0
        while a < top {
            let lower = a, upper = a + Int64(loopBatch)
            let ms = try timed { try db.query("UPDATE \(table) SET \(set) WHERE id > \(lower) AND id <= \(upper) AND \(filter)") }
            a = upper
            samples.append(BatchSample(ms: ms, position: Double(min(a, top)) / Double(top), size: loopBatch))
        }
        return Execution(samples: samples)
    case .backfillDefaults, .backfillTuned, .backfillWorkers, .backfillPhysical:
        let spec = try JobSpec.parse(yaml: Strategy.jobYAML(strategy, table: benchTable), file: "bench-\(strategy.rawValue).yaml")
        // Events arrive from the worker threads.
        let seen = Mutex((samples: [BatchSample](), lastBatch: Date(), finished: Date()))
        let outcome = Runner(spec: spec, options: RunOptions(database: conninfo)) { event in
            seen.withLock { seen in
                if event.kind == .done { seen.finished = event.time }
                guard event.kind == .batch, case .double(let ms) = event["duration_ms"], case .int(let size) = event["batch_size"],
                      case .strings(let key) = event["last_key"], case .int(let done) = event["rows_done"] else { return }
                // A uuid key (or a ctid) has no numeric place in its range: the rows done stand in for it.
                let position = key.first.flatMap(Double.init) ?? Double(done)
                seen.lastBatch = event.time
                seen.samples.append(BatchSample(ms: ms, position: position / Double(rows), size: Int(size)))
            }
        }.run()
        guard case .done = outcome else { throw BenchError("Backfill did not finish: \(outcome)") }
        return seen.withLock { Execution(samples: $0.samples, verifySeconds: $0.finished.timeIntervalSince($0.lastBatch)) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
