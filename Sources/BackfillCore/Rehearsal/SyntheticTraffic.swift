import Foundation
import Histogram
import PostgresClient
import Synchronization

/// What live clients felt during a window: per-transaction latency and throughput.
public struct TrafficFigures: Encodable, Sendable, Hashable {
    public var transactions: UInt64 = 0
    public var errors: UInt64 = 0
    public var seconds: Double = 0
    public var p50Ms: Double = 0
    public var p99Ms: Double = 0
    public var maxMs: Double = 0
    public var tps: Double { seconds > 0 ? Double(transactions) / seconds : 0 }

    public init() {}

    enum CodingKeys: String, CodingKey { case transactions, errors, seconds, p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms", tps }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(transactions, forKey: .transactions)
        try c.encode(errors, forKey: .errors)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(p50Ms, forKey: .p50Ms)
        try c.encode(p99Ms, forKey: .p99Ms)
        try c.encode(maxMs, forKey: .maxMs)
        try c.encode(tps, forKey: .tps)
    }
}

/// Synthetic live traffic: `clients` threads, each on its own connection, running `transaction`
/// back to back until stopped, each run timed into an HdrHistogram (microsecond resolution).
/// Used by `backfill rehearse` and by the benchmarks.
public final class SyntheticTraffic: Sendable {
    private let running = Atomic<Bool>(true)
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three))
    private let counts = Mutex((transactions: UInt64(0), errors: UInt64(0)))
    private let finished = Atomic<Int>(0)
    private let clients: Int
    private let started = ContinuousClock.now

    /// Starts the clients. A client that cannot connect counts as finished with no transactions.
    public init(clients: Int, conninfo: String?, applicationName: String, transaction: @escaping @Sendable (Connection) throws -> Void) {
        self.clients = clients
        for _ in 0..<clients {
            Thread.detachNewThread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                guard let db = try? Connection(conninfo, applicationName: applicationName) else {
                    counts.withLock { $0.errors += 1 }
                    return
                }
                var local = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
                var done: UInt64 = 0, failed: UInt64 = 0
                while running.load(ordering: .acquiring) {
                    let t0 = ContinuousClock.now
                    do {
                        try transaction(db)
                        done += 1
                    } catch {
                        failed += 1
                        if !db.isOpen { break }
                    }
                    _ = local.record(UInt64(max(0, (ContinuousClock.now - t0).microseconds)))
                }
                histogram.withLock { $0.add(local) }
                counts.withLock { $0.transactions += done; $0.errors += failed }
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
        return figures
    }
}

extension Duration {
    /// Whole microseconds.
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
    /// Seconds as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
