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

    var title: String {
        switch self {
        case .singleUpdate: "1. one UPDATE, one transaction"
        case .offset: "2. OFFSET pagination, 5,000/batch"
        case .cte: "3. row-list CTE, 1,000/batch (pgroll, reshape)"
        case .backfillDefaults: "4. Backfill, job defaults"
        case .backfillTuned: "5. Backfill, tuned (\(Self.tunedSettings))"
        case .backfillWorkers: "6. Backfill, defaults, 2 workers"
        }
    }

    static let table = "bench_accounts"
    static let setExpression = "(balance * 100)::bigint"
    static let whereClause = "balance_cents IS NULL"
    static let tunedSettings = "target_ms 100, max 100000"

    static func jobYAML(_ strategy: Strategy) -> String {
        var yaml = """
            name: bench-\(strategy.rawValue)
            table: \(table)
            key: [id]
            where: \(whereClause)
            set:
              balance_cents: '\(setExpression)'

            """
        if strategy == .backfillTuned { yaml += "batch: {target_ms: 100, max: 100000}\n" }
        if strategy == .backfillWorkers { yaml += "workers: 2\n" }
        return yaml
    }
}

/// One batch's wall time and where in the key range it ended (0…1).
struct BatchSample: Sendable {
    var ms: Double
    var position: Double
}

/// What a strategy's run produced: its batches, and for Backfill the seconds from its last batch
/// to `done` (the end-of-job check that no row still matches `where`, a full scan).
struct Execution: Sendable {
    var samples: [BatchSample]
    var verifySeconds: Double?
}

/// Runs a strategy to completion on `db`, returning its batches.
func execute(_ strategy: Strategy, conninfo: String, rows: Int) throws -> Execution {
    let table = Strategy.table
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
        return Execution(samples: [BatchSample(ms: ms, position: 1)])
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
            samples.append(BatchSample(ms: ms, position: Double(min(offset, rows)) / Double(rows)))
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
            samples.append(BatchSample(ms: ms, position: Double(next) / Double(rows)))
        }
        return Execution(samples: samples)
    case .backfillDefaults, .backfillTuned, .backfillWorkers:
        let spec = try JobSpec.parse(yaml: Strategy.jobYAML(strategy), file: "bench-\(strategy.rawValue).yaml")
        // Events arrive from the worker threads.
        let seen = Mutex((samples: [BatchSample](), lastBatch: Date(), finished: Date()))
        let outcome = Runner(spec: spec, options: RunOptions(database: conninfo)) { event in
            seen.withLock { seen in
                if event.kind == .done { seen.finished = event.time }
                guard event.kind == .batch, case .double(let ms) = event["duration_ms"], case .strings(let key) = event["last_key"],
                      let last = key.first.flatMap(Double.init) else { return }
                seen.lastBatch = event.time
                seen.samples.append(BatchSample(ms: ms, position: last / Double(rows)))
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
