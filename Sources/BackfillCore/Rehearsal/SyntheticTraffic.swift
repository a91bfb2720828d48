import Foundation
import Histogram
import PostgresClient
import Synchronization

/// What live clients felt during a window: per-transaction latency and throughput, over the
/// whole window and second by second.
public struct TrafficFigures: Encodable, Sendable, Hashable {
    public var transactions: UInt64 = 0
    public var errors: UInt64 = 0
    public var seconds: Double = 0
    public var p50Ms: Double = 0
    public var p99Ms: Double = 0
    public var maxMs: Double = 0
    /// Transactions that found their row locked and waited for it, and the longest such wait
    /// (from the transaction's first try for the lock to holding it): what the job's locks cost
    /// live traffic, apart from the CPU and I/O that every latency includes. Nil when the traffic
    /// cannot tell (the operator's own `--traffic-sql`: `maxMs` bounds its waits).
    public var lockWaits: UInt64?
    public var maxLockWaitMs: Double?
    public var tps: Double { seconds > 0 ? Double(transactions) / seconds : 0 }
    /// One entry per second of the window, counted from its start (see `SecondBuckets.series`).
    public var series: [TrafficSecond] = []

    public init() {}

    enum CodingKeys: String, CodingKey {
        case transactions, errors, seconds, tps, series, lockWaits = "lock_waits"
        case p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms", maxLockWaitMs = "max_lock_wait_ms"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(transactions, forKey: .transactions)
        try c.encode(errors, forKey: .errors)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(p50Ms, forKey: .p50Ms)
        try c.encode(p99Ms, forKey: .p99Ms)
        try c.encode(maxMs, forKey: .maxMs)
        try c.encode(lockWaits, forKey: .lockWaits)
        try c.encode(maxLockWaitMs, forKey: .maxLockWaitMs)
        try c.encode(tps, forKey: .tps)
        try c.encode(series, forKey: .series)
    }
}

/// One second of live traffic: transactions that ended in it, and their latency. A second in
/// which no transaction ended (every client waiting) has no latency figures (absent in JSON).
public struct TrafficSecond: Encodable, Sendable, Hashable {
    /// Seconds from the start of the window.
    public var second: Int
    public var transactions: UInt64
    public var errors: UInt64
    /// Transactions per second of this second's part of the window.
    public var tps: Double
    public var p50Ms: Double?
    public var p99Ms: Double?
    public var maxMs: Double?

    enum CodingKeys: String, CodingKey { case second, transactions, errors, tps, p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms" }
}

/// Per-second latency histograms of several clients, merged as the clients move on: a second is
/// reduced to its figures once every client has passed it, so memory stays flat however long the
/// window is.
struct SecondBuckets: Sendable {
    typealias Latencies = Histogram<UInt64>
    private var open: [Int: (latencies: Latencies, transactions: UInt64, errors: UInt64)] = [:]
    private var reduced: [Int: TrafficSecond] = [:]
    /// The second each client is in; a finished client is at `Int.max`.
    private var clientSeconds: [Int]

    init(clients: Int) { clientSeconds = Array(repeating: 0, count: clients) }

    static func histogram() -> Latencies { Latencies(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three) }

    /// Adds what `client` recorded in `second`, and notes that it has moved on to `next`.
    mutating func add(client: Int, second: Int, latencies: Latencies, transactions: UInt64, errors: UInt64, next: Int) {
        if latencies.totalCount > 0 || errors > 0 {
            var bucket = open[second] ?? (Self.histogram(), 0, 0)
            bucket.latencies.add(latencies)
            bucket.transactions += transactions
            bucket.errors += errors
            open[second] = bucket
        }
        clientSeconds[client] = next
        // Keep the last second every client has passed open too, and everything once all are
        // done: the window's last part-second may still be folded into it.
        let floor = clientSeconds.min() ?? Int.max
        guard floor != .max else { return }
        for second in open.keys where second < floor - 1 { reduce(second) }
    }

    private mutating func reduce(_ second: Int) {
        guard let bucket = open.removeValue(forKey: second) else { return }
        let h = bucket.latencies
        let any = h.totalCount > 0
        reduced[second] = TrafficSecond(
            second: second, transactions: bucket.transactions, errors: bucket.errors, tps: Double(bucket.transactions),
            p50Ms: any ? Double(h.valueAtPercentile(50)) / 1000 : nil, p99Ms: any ? Double(h.valueAtPercentile(99)) / 1000 : nil,
            maxMs: any ? Double(h.max) / 1000 : nil)
    }

    /// One entry per second of a window `seconds` long, in order, seconds in which no transaction
    /// ended included: as many as the window's seconds, rounded. A last part-second shorter than
    /// half a second joins the second before it (its rate over the 1.x seconds they cover), so
    /// that no point stands for a sliver of time.
    mutating func series(windowSeconds seconds: Double) -> [TrafficSecond] {
        let whole = Int(seconds)
        var count = max(1, seconds - Double(whole) >= 0.5 ? whole + 1 : whole)
        for second in open.keys.sorted() where second > count - 1 {
            guard let late = open.removeValue(forKey: second) else { continue }
            var last = open[count - 1] ?? (Self.histogram(), 0, 0)
            last.latencies.add(late.latencies)
            last.transactions += late.transactions
            last.errors += late.errors
            open[count - 1] = last
        }
        for second in open.keys { reduce(second) }
        count = max(count, (reduced.keys.max() ?? -1) + 1)
        return (0..<count).map { i in
            var entry = reduced[i] ?? TrafficSecond(second: i, transactions: 0, errors: 0, tps: 0, p50Ms: nil, p99Ms: nil, maxMs: nil)
            let covered = i == count - 1 ? max(seconds - Double(i), 0.001) : 1
            entry.tps = Double(entry.transactions) / covered
            return entry
        }
    }
}

/// Synthetic live traffic: `clients` threads, each on its own connection, running `transaction`
/// back to back until stopped, each run timed into an HdrHistogram (microsecond resolution).
/// A transaction that can tell how long it waited for a row lock returns that wait (nil when it
/// did not wait); `measuresLockWaits` says whether it can. Used by `backfill rehearse` and by the
/// benchmarks.
public final class SyntheticTraffic: Sendable {
    /// One live transaction on the client's connection: the time it waited for a lock, or nil.
    public typealias Transaction = @Sendable (Connection) throws -> Duration?

    private let running = Atomic<Bool>(true)
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three))
    private let counts = Mutex((transactions: UInt64(0), errors: UInt64(0), lockWaits: UInt64(0), maxLockWait: Duration.zero))
    private let measuresLockWaits: Bool
    private let seconds: Mutex<SecondBuckets>
    private let finished = Atomic<Int>(0)
    private let clients: Int
    private let started = ContinuousClock.now

    /// Starts the clients. A client that cannot connect counts as finished with no transactions.
    public init(clients: Int, conninfo: String?, applicationName: String, measuresLockWaits: Bool = false, transaction: @escaping Transaction) {
        self.clients = clients
        self.measuresLockWaits = measuresLockWaits
        seconds = Mutex(SecondBuckets(clients: clients))
        for client in 0..<clients {
            Thread.detachNewThread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                guard let db = try? Connection(conninfo, applicationName: applicationName) else {
                    counts.withLock { $0.errors += 1 }
                    seconds.withLock { $0.add(client: client, second: 0, latencies: SecondBuckets.histogram(), transactions: 0, errors: 0, next: .max) }
                    return
                }
                var local = SecondBuckets.histogram()
                var done: UInt64 = 0, failed: UInt64 = 0, waits: UInt64 = 0, longestWait = Duration.zero
                // This second's figures, handed to the shared buckets when a transaction ends in a later one.
                var current = 0, thisSecond = SecondBuckets.histogram(), doneNow: UInt64 = 0, failedNow: UInt64 = 0
                while running.load(ordering: .acquiring) {
                    let t0 = ContinuousClock.now
                    var succeeded = true
                    do {
                        if let waited = try transaction(db) {
                            waits += 1
                            longestWait = max(longestWait, waited)
                        }
                    } catch {
                        succeeded = false
                    }
                    let t1 = ContinuousClock.now
                    let second = Int((t1 - started).seconds)
                    if second != current {
                        seconds.withLock { $0.add(client: client, second: current, latencies: thisSecond, transactions: doneNow, errors: failedNow, next: second) }
                        thisSecond.reset()
                        (current, doneNow, failedNow) = (second, 0, 0)
                    }
                    let micros = UInt64(max(0, (t1 - t0).microseconds))
                    _ = local.record(micros)
                    _ = thisSecond.record(micros)
                    if succeeded {
                        done += 1
                        doneNow += 1
                    } else {
                        failed += 1
                        failedNow += 1
                        if !db.isOpen { break }
                    }
                }
                histogram.withLock { $0.add(local) }
                counts.withLock {
                    $0.transactions += done
                    $0.errors += failed
                    $0.lockWaits += waits
                    $0.maxLockWait = max($0.maxLockWait, longestWait)
                }
                seconds.withLock { $0.add(client: client, second: current, latencies: thisSecond, transactions: doneNow, errors: failedNow, next: .max) }
            }
        }
    }

    /// Stops the clients, waits for them, and returns what they felt.
    public func stop() -> TrafficFigures {
        running.store(false, ordering: .releasing)
        while finished.load(ordering: .acquiring) < clients { usleep(5_000) }
        let h = histogram.withLock { $0 }
        let c = counts.withLock { $0 }
        var figures = TrafficFigures()
        figures.transactions = c.transactions
        figures.errors = c.errors
        figures.seconds = (ContinuousClock.now - started).seconds
        figures.p50Ms = Double(h.valueAtPercentile(50)) / 1000
        figures.p99Ms = Double(h.valueAtPercentile(99)) / 1000
        figures.maxMs = Double(h.max) / 1000
        if measuresLockWaits {
            figures.lockWaits = c.lockWaits
            figures.maxLockWaitMs = c.maxLockWait.milliseconds
        }
        figures.series = seconds.withLock { $0.series(windowSeconds: figures.seconds) }
        return figures
    }
}

extension Duration {
    /// Whole microseconds.
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
    /// Seconds as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
