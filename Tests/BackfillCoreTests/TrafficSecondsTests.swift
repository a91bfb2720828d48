@testable import BackfillCore
import Histogram
import Testing

@Suite("Live traffic second by second")
struct TrafficSecondsTests {
    private func latencies(_ micros: [UInt64]) -> Histogram<UInt64> {
        var h = SecondBuckets.histogram()
        for m in micros { _ = h.record(m) }
        return h
    }

    @Test("clients' seconds merge; a second where every client waited has no latency and 0 TPS; the last second's rate is over its part")
    func seconds() {
        var buckets = SecondBuckets(clients: 2)
        buckets.add(client: 0, second: 0, latencies: latencies([500, 700]), transactions: 2, errors: 0, next: 1)
        buckets.add(client: 1, second: 0, latencies: latencies([900]), transactions: 1, errors: 0, next: 3)
        // Client 0 waits from second 1 to second 3 (a lock held for two seconds).
        buckets.add(client: 0, second: 3, latencies: latencies([2_100_000]), transactions: 1, errors: 0, next: .max)
        buckets.add(client: 1, second: 3, latencies: latencies([400, 600]), transactions: 1, errors: 1, next: .max)
        let series = buckets.series(windowSeconds: 3.5)
        #expect(series.map(\.second) == [0, 1, 2, 3])
        #expect(series.map(\.transactions) == [3, 0, 0, 2])
        #expect(series[0].tps == 3 && series[1].tps == 0 && series[3].tps == 4)
        #expect(series[1].p50Ms == nil && series[1].maxMs == nil)
        #expect(series[3].errors == 1)
        #expect(abs((series[0].maxMs ?? 0) - 0.9) < 0.01)
        #expect(abs((series[3].maxMs ?? 0) - 2_100) < 3)
    }

    @Test("a last part-second shorter than half a second joins the second before it")
    func shortLastSecond() {
        var buckets = SecondBuckets(clients: 1)
        buckets.add(client: 0, second: 0, latencies: latencies([100, 100]), transactions: 2, errors: 0, next: 1)
        buckets.add(client: 0, second: 1, latencies: latencies([100, 100, 100]), transactions: 3, errors: 0, next: 2)
        buckets.add(client: 0, second: 2, latencies: latencies([4_000]), transactions: 1, errors: 0, next: .max)
        let series = buckets.series(windowSeconds: 2.2)
        #expect(series.map(\.transactions) == [2, 4])
        #expect(abs(series[1].tps - 4 / 1.2) < 1e-9)
        #expect(abs((series[1].maxMs ?? 0) - 4) < 0.01)
    }

    @Test("a second is reduced only once every client has moved past it")
    func lateClient() {
        var buckets = SecondBuckets(clients: 2)
        buckets.add(client: 0, second: 0, latencies: latencies([100]), transactions: 1, errors: 0, next: 5)
        // Client 1's transaction of second 0 arrives late: it still counts in second 0.
        buckets.add(client: 1, second: 0, latencies: latencies([300]), transactions: 1, errors: 0, next: 5)
        let series = buckets.series(windowSeconds: 1)
        #expect(series.count == 1)
        #expect(series[0].transactions == 2)
        #expect(abs((series[0].maxMs ?? 0) - 0.3) < 0.01)
    }
}
