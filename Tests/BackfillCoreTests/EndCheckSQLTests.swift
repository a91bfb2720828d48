@testable import BackfillCore
import Testing

@Suite("End check SQL")
struct EndCheckSQLTests {
    static let singleSpec = try! JobSpec.parse(yaml: "name: a\ntable: t\nkey: [id]\nwhere: v IS NULL\nset: {v: 1}", file: "a.yaml")
    static let compositeSpec = try! JobSpec.parse(yaml: "name: b\ntable: s.t\nkey: [tenant, id]\nwhere: v IS NULL\nset: {v: 1}", file: "b.yaml")
    let single = BatchStatements(spec: singleSpec, key: [KeyColumn(name: "id", type: "bigint")])
    let composite = BatchStatements(spec: compositeSpec, key: [KeyColumn(name: "tenant", type: "text"), KeyColumn(name: "id", type: "bigint")])

    @Test("rows outside the unwalked intervals: the limit, the job, then each interval's bounds in order; quarantined keys left out")
    func outside() throws {
        let intervals = [KeyInterval(lower: nil, upper: ["10"]), KeyInterval(lower: ["20"], upper: ["30"]), KeyInterval(lower: ["40"], upper: nil)]
        let scope = BatchStatements.RemainingScope.outside(intervals)
        #expect(try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows", scope: scope)).text
            == #"SELECT count(*) AS n FROM (SELECT 1 FROM "t" WHERE NOT (("id" <= $3::bigint) OR ("id" > $4::bigint AND "id" <= $5::bigint) OR ("id" > $6::bigint)) AND (v IS NULL) AND NOT EXISTS (SELECT 1 FROM bf.bad_rows b WHERE b.job = $2 AND "t"."id" = (b.key ->> 0)::bigint) LIMIT $1) s"#)
        #expect(scope.parameters == [.text("10"), .text("20"), .text("30"), .text("40")])
    }

    @Test("a composite key compares rows; an interval with no bounds is the whole key space; no scope reads every row")
    func compositeAndWhole() throws {
        let interval = KeyInterval(lower: ["a", "1"], upper: ["b", "2"])
        let within = try #require(composite.remainingCount(spec: Self.compositeSpec, excludingBadRowsIn: "bf.bad_rows", scope: .within(interval)))
        #expect(within.text.contains(#"WHERE ("tenant", "id") > ($3::text, $4::bigint) AND ("tenant", "id") <= ($5::text, $6::bigint) AND (v IS NULL)"#), "\(within)")
        #expect(BatchStatements.RemainingScope.within(interval).parameters == [.text("a"), .text("1"), .text("b"), .text("2")])
        let whole = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows", scope: .outside([KeyInterval(lower: nil, upper: nil)])))
        #expect(whole.text.contains("WHERE NOT ((true)) AND"))
        let all = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows"))
        #expect(all.text.contains(#"FROM "t" WHERE (v IS NULL) AND NOT EXISTS"#))
        #expect(BatchStatements.RemainingScope.all.parameters.isEmpty)
    }

    @Test("a chunk of heap pages: its tid bounds follow the scope's parameters")
    func pageChunks() throws {
        let all = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows", pages: true))
        #expect(all.text.contains(#"FROM "t" WHERE ctid >= $3::tid AND ctid < $4::tid AND (v IS NULL)"#), "\(all)")
        let outside = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows",
                                                         scope: .outside([KeyInterval(lower: ["20"], upper: ["30"])]), pages: true))
        #expect(outside.text.contains(#"WHERE ctid >= $5::tid AND ctid < $6::tid AND NOT (("id" > $3::bigint AND "id" <= $4::bigint)) AND (v IS NULL)"#), "\(outside)")
    }
}

@Suite("Batch transaction settings")
struct SessionPinsTests {
    @Test("the batch's settings are one statement of set_config calls local to the transaction, quotes doubled")
    func setLocal() {
        #expect(SessionPins.setLocal(["lock_timeout = '100ms'", "enable_seqscan = off", "DateStyle = 'ISO, YMD'", "x = it's"])
            == "SELECT set_config('lock_timeout', '100ms', true), set_config('enable_seqscan', 'off', true), set_config('DateStyle', 'ISO, YMD', true), set_config('x', 'it''s', true)")
    }
}

@Suite("Keys left to walk")
struct KeysLeftTests {
    func range(_ start: String?, _ position: String?, _ upper: String?, walked: Int64, estimated: Int64) -> Unwalked.Range {
        Unwalked.Range(interval: KeyInterval(lower: position.map { [$0] }, upper: upper.map { [$0] }), start: start.map { [$0] }, walked: walked, estimated: estimated)
    }

    @Test("a numeric key's range extrapolates the density it walked, whatever its estimate said")
    func extrapolated() {
        // The last range of keys 1…2,000,000 was estimated at 500,000 keys but holds 389,637: at
        // 1,900,000 it has walked 289,637 keys, and 100,000 are left, not 210,363.
        let last = range("1610363", "1900000", nil, walked: 289_637, estimated: 500_000)
        #expect(Unwalked(open: [last], keys: 2_000_000).keysLeft(bounds: (1, 2_000_000)) == 100_000)
        // Half the keys of a range deleted: its density is half, and so is what is left.
        let sparse = range("1000", "3000", "5000", walked: 1_000, estimated: 4_000)
        #expect(Unwalked(open: [sparse], keys: 4_000).keysLeft(bounds: (1, 10_000)) == 1_000)
        // The first range starts at the key's minimum.
        let first = range(nil, "101", "1001", walked: 100, estimated: 5_000)
        #expect(Unwalked(open: [first], keys: 5_000).keysLeft(bounds: (1, 10_000)) == 900)
    }

    @Test("the estimate less what was walked: no walk yet, no numeric key, no bounds; never below 0")
    func estimated() {
        let fresh = range("10", nil, "20", walked: 0, estimated: 700)
        let text = range("a", "m", "z", walked: 300, estimated: 1_000)
        let over = range("10", "15", "20", walked: 2_000, estimated: 1_000)
        #expect(Unwalked(open: [fresh, text], keys: 1_700).keysLeft(bounds: (1, 100)) == 700 + 700)
        #expect(Unwalked(open: [over], keys: 2_000).keysLeft(bounds: nil) == 0)
        #expect(Unwalked(open: [over], keys: 2_000).keysLeft(bounds: (1, 100)) == 2_000)
    }
}

@Suite("When the end check's early count starts")
struct EndCheckStartTests {
    /// Feeds a walk of `keys` keys at `pace` keys a ms, polled every 100 ms; returns the keys left
    /// when the early count starts.
    func leftAtStart(keys: Int64, pace: Double, countMs: Double?) -> Int64? {
        var start = EndCheckStart()
        var ms = 0.0
        while true {
            let left = max(0, keys - Int64(pace * ms))
            if start.shouldStart(atMs: ms, keysLeft: left, keys: keys, countMs: countMs) { return left }
            if left == 0 { return nil }
            ms += 100
        }
    }

    @Test("the count starts when the walk's time left is about its own: it ends about when the walk does")
    func timed() throws {
        // 2M keys at 300 keys a ms (6.7 s); the count takes 500 ms: start with 1.25 × 500 ms of walk left.
        let left = try #require(leftAtStart(keys: 2_000_000, pace: 300, countMs: 500))
        #expect(Double(left) / 300 <= 625 && Double(left) / 300 > 625 - 100, "started with \(left) keys left (one poll is 100 ms)")
    }

    @Test("never earlier than a quarter of the keys left, at the latest at 5 %, and at 5 % when the count's time is unknown")
    func bounds() throws {
        #expect(try #require(leftAtStart(keys: 2_000_000, pace: 300, countMs: 60_000)) <= 500_000)
        #expect(try #require(leftAtStart(keys: 2_000_000, pace: 300, countMs: 1)) >= 100_000 - 300 * 100)
        #expect(try #require(leftAtStart(keys: 2_000_000, pace: 300, countMs: nil)) <= 100_000)
        #expect(try #require(leftAtStart(keys: 2_000_000, pace: 300, countMs: nil)) >= 100_000 - 300 * 100)
    }

    @Test("a walk that stalls (throttled, paused) has no pace: the count waits for the latest point")
    func stalled() {
        var start = EndCheckStart()
        for step in 0..<50 {
            let started = start.shouldStart(atMs: Double(step) * 100, keysLeft: 200_000, keys: 1_000_000, countMs: 10_000)
            #expect(!started)
        }
        let latest = start.shouldStart(atMs: 5000, keysLeft: 50_000, keys: 1_000_000, countMs: 10_000)
        #expect(latest)
    }
}

@Suite("What the walk walked between two looks at the store")
struct WalkedSinceTests {
    typealias P = Unwalked.Position
    @Test("a range's checkpoint moved, a range done, a range split off and walked, one untouched: every walked key once, none left out")
    func walkedSince() {
        let then = Unwalked(open: [], keys: 0, positions: [
            0: P(start: nil, last: ["100"], ceiling: ["500"], done: false),
            1: P(start: ["500"], last: ["700"], ceiling: ["900"], done: false),
            2: P(start: ["900"], last: ["950"], ceiling: nil, done: false),
            3: P(start: ["2000"], last: nil, ceiling: ["3000"], done: false),
            4: P(start: ["3000"], last: ["3500"], ceiling: ["4000"], done: true),
        ])
        let now = Unwalked(open: [], keys: 0, positions: [
            0: P(start: nil, last: ["200"], ceiling: ["300"], done: false),     // walked to 200, split at 300
            5: P(start: ["300"], last: ["350"], ceiling: ["500"], done: false), // the split-off half, walked to 350
            1: P(start: ["500"], last: ["880"], ceiling: ["900"], done: true),  // done: up to its ceiling
            2: P(start: ["900"], last: ["950"], ceiling: nil, done: false),     // not moved
            3: P(start: ["2000"], last: nil, ceiling: ["3000"], done: false),   // not started
            4: P(start: ["3000"], last: ["3500"], ceiling: ["4000"], done: true),
        ])
        #expect(now.walked(since: then) == [
            KeyInterval(lower: ["100"], upper: ["200"]),
            KeyInterval(lower: ["700"], upper: ["900"]),
            KeyInterval(lower: ["300"], upper: ["350"]),
        ])
        // The last range done: its interval reaches the end of the key space.
        let end = Unwalked(open: [], keys: 0, positions: [2: P(start: ["900"], last: ["990"], ceiling: nil, done: true)])
        #expect(end.walked(since: then) == [KeyInterval(lower: ["950"], upper: nil)])
    }
}
