@testable import BackfillCore
import PostgresClient
import Testing

/// The bisection of a failed batch, driven against a table in memory: keys 1…n, some of them bad.
@Suite("Bisection of a batch that failed with a data error")
struct BisectionTests {
    /// Runs a bisection of the batch after `lower` up to `upper` over the sorted `keys` to the
    /// end, the way the worker does: each attempt writes its part unless it holds a bad key; a
    /// split reads the key `offset` past the first after `lower`. Returns the parts written (their
    /// keys, in order), the bad keys found, and how many steps it took.
    func drive(keys: [Int], bad: Set<Int>, lower: Int? = nil, upper: Int) -> (written: [[Int]], bad: [Int], steps: Int) {
        let inBatch = keys.filter { $0 > (lower ?? Int.min) && $0 <= upper }
        var b = Bisection(range: 0, lower: lower.map { [String($0)] }, upper: [String(upper)], keys: inBatch.count)
        var written: [[Int]] = [], found: [Int] = [], steps = 0
        func part(after lower: [String]?, upTo upper: [String]) -> [Int] {
            keys.filter { $0 > (lower.map { Int($0[0])! } ?? Int.min) && $0 <= Int(upper[0])! }
        }
        while steps < 10_000 {
            steps += 1
            switch b.step {
            case .finished:
                return (written, found, steps)
            case .split(let lower, let upper, let offset):
                let run = part(after: lower, upTo: upper)
                if offset < run.count { b.split(at: [String(run[offset])], walked: offset + 1) } else { b.split(at: run.last.map { [String($0)] }, walked: run.count) }
            case .attempt(let lower, let upper, _):
                let run = part(after: lower, upTo: upper)
                if run.contains(where: bad.contains) {
                    if let key = b.failed() { found.append(Int(key[0])!) }
                } else {
                    written.append(run)
                    b.written()
                }
            }
        }
        Issue.record("the bisection did not end")
        return (written, found, steps)
    }

    @Test("every bad key is found once, every other key written once, in key order", arguments: [
        (1000, [1]), (1000, [1000]), (1000, [500, 501]), (1000, [2, 3, 5, 7, 11, 13, 999]), (1, [1]), (2, [1, 2]), (37, Array(1...37)), (1000, []),
    ])
    func isolates(size: Int, bad: [Int]) {
        let keys = Array(1...size)
        let result = drive(keys: keys, bad: Set(bad), upper: size)
        #expect(result.bad == bad)
        let flat = result.written.flatMap { $0 }
        #expect(flat == keys.filter { !bad.contains($0) }, "written in key order, each once")
        #expect(flat.count + result.bad.count == size)
    }

    @Test("a bad key costs at most three steps per halving (a split query, two attempts): one bad key in 1,024 takes at most 3 × 10 + 2")
    func logarithmic() {
        let result = drive(keys: Array(1...1024), bad: [700], upper: 1024)
        #expect(result.bad == [700])
        #expect(result.steps <= 32, "\(result.steps) steps")
        #expect(result.written.count <= 11, "\(result.written.count) transactions wrote parts")
    }

    @Test("sparse keys after a checkpoint: the batch walks only its own keys")
    func sparse() {
        let keys = stride(from: 10, through: 10_000, by: 10).map { $0 }
        let result = drive(keys: keys, bad: [2_000, 2_010], lower: 1_500, upper: 2_500)
        #expect(result.bad == [2_000, 2_010])
        #expect(result.written.flatMap { $0 } == keys.filter { $0 > 1_500 && $0 <= 2_500 && $0 != 2_000 && $0 != 2_010 })
    }

    @Test("a batch of one key is tried alone first; a part whose count was stale is counted again, then split")
    func counts() {
        var one = Bisection(range: 3, lower: ["9"], upper: ["10"], keys: 1)
        #expect(one.step == .attempt(lower: ["9"], upper: ["10"], keys: 1))
        #expect(one.failed() == ["10"])
        #expect(one.step == .finished && one.lower == ["10"])

        // Counted 8 keys, but only 3 are left: the split lands on the upper key itself.
        var stale = Bisection(range: 0, lower: nil, upper: ["8"], keys: 8)
        #expect(stale.step == .split(lower: nil, upper: ["8"], offset: 3))
        stale.split(at: ["8"], walked: 3)
        #expect(stale.step == .split(lower: nil, upper: ["8"], offset: 0))
        stale.split(at: ["2"], walked: 1)
        #expect(stale.step == .attempt(lower: nil, upper: ["2"], keys: 1))

        // No key left in the part (deleted meanwhile): it is tried as it is and writes nothing.
        var gone = Bisection(range: 0, lower: ["1"], upper: ["5"], keys: 4)
        gone.split(at: nil, walked: 0)
        #expect(gone.step == .attempt(lower: ["1"], upper: ["5"], keys: 1))

        // A key inserted before a single key: it is tried alone first.
        var inserted = Bisection(range: 0, lower: ["1"], upper: ["5"], keys: 1)
        inserted.found(first: ["3"])
        #expect(inserted.step == .attempt(lower: ["1"], upper: ["3"], keys: 1))
        inserted.written()
        #expect(inserted.step == .attempt(lower: ["3"], upper: ["5"], keys: 1))
    }

    @Test("composite keys travel whole", arguments: [["1", "17"], ["2", "2500"]])
    func composite(key: [String]) {
        var b = Bisection(range: 1, lower: ["1", "16"], upper: key, keys: 1)
        #expect(b.failed() == key)
    }

    @Test("classes 22 and 23 are isolated; lock timeouts, syntax errors and lost connections are not", arguments: [
        ("22P02", true), ("22003", true), ("22012", true), ("23505", true), ("23514", true), ("23502", true), ("23503", true),
        ("55P03", false), ("42601", false), ("08006", false), ("57014", false), ("40P01", false),
    ])
    func classes(code: String, isolated: Bool) {
        #expect(Bisection.isolates(PostgresError(code: .init(code), message: "x")) == isolated)
    }
}
