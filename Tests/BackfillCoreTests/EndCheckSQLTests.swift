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
        #expect(try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows", scope: scope))
            == #"SELECT count(*) AS n FROM (SELECT 1 FROM "t" WHERE NOT (("id" <= $3::bigint) OR ("id" > $4::bigint AND "id" <= $5::bigint) OR ("id" > $6::bigint)) AND (v IS NULL) AND NOT EXISTS (SELECT 1 FROM bf.bad_rows b WHERE b.job = $2 AND "t"."id" = (b.key ->> 0)::bigint) LIMIT $1) s"#)
        #expect(scope.parameters == [.text("10"), .text("20"), .text("30"), .text("40")])
    }

    @Test("a composite key compares rows; an interval with no bounds is the whole key space; no scope reads every row")
    func compositeAndWhole() throws {
        let interval = KeyInterval(lower: ["a", "1"], upper: ["b", "2"])
        let within = try #require(composite.remainingCount(spec: Self.compositeSpec, excludingBadRowsIn: "bf.bad_rows", scope: .within(interval)))
        #expect(within.contains(#"WHERE ("tenant", "id") > ($3::text, $4::bigint) AND ("tenant", "id") <= ($5::text, $6::bigint) AND (v IS NULL)"#), "\(within)")
        #expect(BatchStatements.RemainingScope.within(interval).parameters == [.text("a"), .text("1"), .text("b"), .text("2")])
        let whole = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows", scope: .outside([KeyInterval(lower: nil, upper: nil)])))
        #expect(whole.contains("WHERE NOT ((true)) AND"))
        let all = try #require(single.remainingCount(spec: Self.singleSpec, excludingBadRowsIn: "bf.bad_rows"))
        #expect(all.contains(#"FROM "t" WHERE (v IS NULL) AND NOT EXISTS"#))
        #expect(BatchStatements.RemainingScope.all.parameters.isEmpty)
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
