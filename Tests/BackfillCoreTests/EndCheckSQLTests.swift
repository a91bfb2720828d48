@testable import BackfillCore
import Testing

@Suite("End check SQL")
struct EndCheckSQLTests {
    let single = BatchStatements(spec: try! JobSpec.parse(yaml: "name: a\ntable: t\nkey: [id]\nwhere: v IS NULL\nset: {v: 1}", file: "a.yaml"),
                                 key: [KeyColumn(name: "id", type: "bigint")])
    let composite = BatchStatements(spec: try! JobSpec.parse(yaml: "name: b\ntable: s.t\nkey: [tenant, id]\nwhere: v IS NULL\nset: {v: 1}", file: "b.yaml"),
                                    key: [KeyColumn(name: "tenant", type: "text"), KeyColumn(name: "id", type: "bigint")])

    @Test("rows outside the unwalked intervals: each interval's bounds as parameters, in order, then the limit")
    func outside() {
        let intervals = [KeyInterval(lower: nil, upper: ["10"]), KeyInterval(lower: ["20"], upper: ["30"]), KeyInterval(lower: ["40"], upper: nil)]
        #expect(single.remainingCount(where: "v IS NULL", outside: intervals)
            == #"SELECT count(*) AS n FROM (SELECT 1 FROM "t" WHERE (v IS NULL) AND NOT (("id" <= $1::bigint) OR ("id" > $2::bigint AND "id" <= $3::bigint) OR ("id" > $4::bigint)) LIMIT $5) s"#)
        #expect(KeyInterval.parameters(intervals) == [.text("10"), .text("20"), .text("30"), .text("40")])
    }

    @Test("a composite key compares rows; an interval with no bounds is the whole key space")
    func compositeAndWhole() {
        let interval = KeyInterval(lower: ["a", "1"], upper: ["b", "2"])
        #expect(composite.remainingCount(where: "v IS NULL", within: interval)
            == #"SELECT count(*) AS n FROM (SELECT 1 FROM "s"."t" WHERE ("tenant", "id") > ($1::text, $2::bigint) AND ("tenant", "id") <= ($3::text, $4::bigint) AND (v IS NULL) LIMIT $5) s"#)
        #expect(KeyInterval.parameters([interval]) == [.text("a"), .text("1"), .text("b"), .text("2")])
        #expect(single.remainingCount(where: "v IS NULL", outside: [KeyInterval(lower: nil, upper: nil)]).contains("AND NOT ((true))"))
        #expect(!single.remainingCount(where: "v IS NULL", outside: []).contains("NOT"))
    }
}
