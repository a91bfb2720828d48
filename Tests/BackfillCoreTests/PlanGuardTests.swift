@testable import BackfillCore
import Testing

/// The plan guard's decisions on EXPLAIN (FORMAT JSON, VERBOSE) plans written here, in the shapes
/// PostgreSQL 15 gives for Backfill's batch statements (fields the guard does not read left out).
@Suite("Plan guard")
struct PlanGuardTests {
    let update = PlanGuard(relations: [["public", "items"]], indexes: ["items_pkey"], isSQLAction: false)
    let sql = PlanGuard(relations: [["public", "items"]], indexes: ["items_pkey"], isSQLAction: true)
    static let bothBounds = "((items.id > '5'::bigint) AND (items.id <= '50000'::bigint))"

    /// An `update` batch: `WITH changed AS (UPDATE … RETURNING …) SELECT count(*) … FROM changed`,
    /// the update reading the table through `scan`.
    func updatePlan(_ scan: String) -> String {
        """
        [{"Plan": {"Node Type": "Aggregate", "Strategy": "Plain", "Plans": [
          {"Node Type": "ModifyTable", "Operation": "Update", "Parent Relationship": "InitPlan", "Subplan Name": "CTE changed",
           "Relation Name": "items", "Schema": "public", "Alias": "items", "Plans": [\(scan)]},
          {"Node Type": "CTE Scan", "Parent Relationship": "Outer", "CTE Name": "changed", "Alias": "changed"}]}}]
        """
    }

    func indexScan(_ type: String = "Index Scan", index: String = "items_pkey", cond: String = bothBounds) -> String {
        """
        {"Node Type": "\(type)", "Parent Relationship": "Outer", "Scan Direction": "Forward", "Index Name": "\(index)",
         "Relation Name": "items", "Schema": "public", "Alias": "items", "Index Cond": "\(cond)", "Filter": "(items.filled IS NULL)"}
        """
    }

    /// A `sql` batch: `WITH batch AS MATERIALIZED (SELECT id … FOR NO KEY UPDATE) UPDATE items … FROM
    /// batch WHERE items.id = batch.id`, the CTE reading through `batchScan`, the join being `join`.
    func sqlPlan(batchScan: String? = nil, join: String) -> String {
        """
        [{"Plan": {"Node Type": "ModifyTable", "Operation": "Update", "Relation Name": "items", "Schema": "public", "Alias": "items", "Plans": [
          {"Node Type": "LockRows", "Parent Relationship": "InitPlan", "Subplan Name": "CTE batch", "Plans": [\(batchScan ?? """
            {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Index Name": "items_pkey", "Relation Name": "items", "Schema": "public",
             "Alias": "items_1", "Index Cond": "((items_1.id > '5'::bigint) AND (items_1.id <= '50000'::bigint))"}
            """)]},
          \(join)]}}]
        """
    }

    @Test("an update through an Index Scan or Index Only Scan of the key's index, both bounds in its condition: bounded",
          arguments: ["Index Scan", "Index Only Scan"])
    func indexScanAccepted(type: String) {
        #expect(update.check(explainJSON: updatePlan(indexScan(type))) == .bounded("\(type) using items_pkey, both bounds in the index condition"))
    }

    @Test("a Bitmap Heap Scan over one Bitmap Index Scan of the key's index: bounded")
    func bitmapAccepted() {
        let scan = """
            {"Node Type": "Bitmap Heap Scan", "Parent Relationship": "Outer", "Relation Name": "items", "Schema": "public",
             "Recheck Cond": "\(Self.bothBounds)", "Filter": "(items.filled IS NULL)", "Plans": [
              {"Node Type": "Bitmap Index Scan", "Parent Relationship": "Outer", "Index Name": "items_pkey", "Index Cond": "\(Self.bothBounds)"}]}
            """
        #expect(update.check(explainJSON: updatePlan(scan)) == .bounded("Bitmap Index Scan using items_pkey, both bounds in the index condition"))
    }

    @Test("a Seq Scan is refused, the plan in the message")
    func seqScanRefused() {
        let scan = """
            {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "items", "Schema": "public", "Alias": "items",
             "Filter": "((items.filled IS NULL) AND (items.id > '5'::bigint) AND (items.id <= '50000'::bigint))"}
            """
        #expect(update.check(explainJSON: updatePlan(scan)) == .unbounded("""
            the batch reads the table with a Seq Scan, not a range scan of the key's index: every batch would read the whole table
            plan:
            Aggregate
              CTE changed: ModifyTable on public.items
                Seq Scan on public.items
                    Filter: ((items.filled IS NULL) AND (items.id > '5'::bigint) AND (items.id <= '50000'::bigint))
              CTE Scan
            """))
    }

    @Test("a combination of bitmaps (BitmapAnd) is refused")
    func bitmapAndRefused() {
        let scan = """
            {"Node Type": "Bitmap Heap Scan", "Relation Name": "items", "Schema": "public", "Recheck Cond": "(items.filled IS NULL)", "Plans": [
              {"Node Type": "BitmapAnd", "Plans": [
                {"Node Type": "Bitmap Index Scan", "Index Name": "items_pkey", "Index Cond": "\(Self.bothBounds)"},
                {"Node Type": "Bitmap Index Scan", "Index Name": "items_filled_idx", "Index Cond": "(items.filled IS NULL)"}]}]}
            """
        guard case .unbounded(let problem) = update.check(explainJSON: updatePlan(scan)) else { Issue.record("should be refused"); return }
        #expect(problem.hasPrefix("the batch reads the table through a combination of bitmaps, not one range of the key's index\nplan:\n"))
        #expect(problem.contains("    Bitmap Heap Scan on public.items\n") && problem.contains("Bitmap Index Scan using items_filled_idx"), "\(problem)")
    }

    @Test("an index other than the key's is refused, naming both")
    func otherIndexRefused() {
        let finding = update.check(explainJSON: updatePlan(indexScan(index: "items_filled_idx", cond: "(items.filled IS NULL)")))
        guard case .unbounded(let problem) = finding else { Issue.record("should be refused"); return }
        #expect(problem.hasPrefix("the batch reads the table through index items_filled_idx, not the key's index (items_pkey)\nplan:\n"), "\(problem)")
    }

    @Test("a bound missing from the index condition is refused, naming which", arguments: [
        ("(items.id > '5'::bigint)", "upper"),
        ("(items.id <= '50000'::bigint)", "lower"),
        ("(items.id = ANY ('{1,2}'::bigint[]))", "lower and upper"),
        // Operators inside a literal are not the condition's.
        ("(items.id > '5'::bigint) AND (items.code = 'a<=b'::text)", "upper"),
    ])
    func missingBound(cond: String, missing: String) {
        guard case .unbounded(let problem) = update.check(explainJSON: updatePlan(indexScan(cond: cond))) else { Issue.record("should be refused"); return }
        #expect(problem.hasPrefix("the batch's range is not an index condition on items_pkey (Index Cond: \(cond)): the \(missing) bound would be checked row by row, not by the index\nplan:\n"), "\(problem)")
    }

    @Test("the first range (no checkpoint yet) needs only the upper bound")
    func firstRange() {
        let first = PlanGuard(relations: [["public", "items"]], indexes: ["items_pkey"], isSQLAction: false, hasLowerBound: false)
        #expect(first.check(explainJSON: updatePlan(indexScan(cond: "(items.id <= '1000'::bigint)"))) == .bounded("Index Scan using items_pkey, both bounds in the index condition"))
    }

    @Test("a composite key's row comparisons count as both bounds")
    func compositeKey() {
        let cond = "((ROW(items.a, items.b) > ROW('1'::bigint, '2'::bigint)) AND (ROW(items.a, items.b) <= ROW('3'::bigint, '4'::bigint)))"
        #expect(update.check(explainJSON: updatePlan(indexScan(cond: cond))) == .bounded("Index Scan using items_pkey, both bounds in the index condition"))
    }

    @Test("partitions: every partition's scan must be bounded; scans of other tables are not judged")
    func partitions() {
        let parts = PlanGuard(relations: [["public", "items_p1"], ["public", "items_p2"]], indexes: ["items_p1_pkey", "items_p2_pkey"], isSQLAction: false)
        func scan(_ table: String, _ type: String = "Index Scan") -> String {
            """
            {"Node Type": "\(type)", "Index Name": "\(table)_pkey", "Relation Name": "\(table)", "Schema": "public", "Index Cond": "((id > '5'::bigint) AND (id <= '9'::bigint))"}
            """
        }
        let other = #"{"Node Type": "Seq Scan", "Relation Name": "lookup", "Schema": "public"}"#
        let plan = updatePlan(#"{"Node Type": "Append", "Plans": [\#(scan("items_p1")), \#(scan("items_p2")), \#(other)]}"#)
        #expect(parts.check(explainJSON: plan) == .bounded(
            "Index Scan using items_p1_pkey, both bounds in the index condition; Index Scan using items_p2_pkey, both bounds in the index condition"))
        let oneWhole = updatePlan(#"{"Node Type": "Append", "Plans": [\#(scan("items_p1")), {"Node Type": "Seq Scan", "Relation Name": "items_p2", "Schema": "public"}]}"#)
        guard case .unbounded(let problem) = parts.check(explainJSON: oneWhole) else { Issue.record("should be refused"); return }
        #expect(problem.contains("with a Seq Scan") && problem.contains("Seq Scan on public.items_p2"))
    }

    @Test("an empty range (no scan of the table at all) is bounded; a plan that cannot be read is not")
    func emptyAndUnreadable() {
        let empty = updatePlan(#"{"Node Type": "Result", "Parent Relationship": "Outer", "One-Time Filter": "false"}"#)
        #expect(update.check(explainJSON: empty) == .bounded("no rows to read (the range is empty)"))
        #expect(update.check(explainJSON: "not json") == .unbounded("the server's plan could not be read"))
        #expect(update.check(explainJSON: #"[{"Query": 1}]"#) == .unbounded("the server's plan could not be read"))
    }

    @Test("sql: the batch CTE by the key's index and a join on the key: bounded")
    func sqlAccepted() {
        let join = """
            {"Node Type": "Nested Loop", "Parent Relationship": "Outer", "Join Type": "Inner", "Plans": [
              {"Node Type": "CTE Scan", "Parent Relationship": "Outer", "CTE Name": "batch", "Alias": "batch"},
              {"Node Type": "Index Scan", "Parent Relationship": "Inner", "Index Name": "items_pkey", "Relation Name": "items", "Schema": "public",
               "Alias": "items", "Index Cond": "(items.id = batch.id)"}]}
            """
        #expect(sql.check(explainJSON: sqlPlan(join: join)) == .bounded("Index Scan using items_pkey, both bounds in the index condition"))
    }

    @Test("sql: a hash join reading the whole table outside the batch is `joinsWholeTable`, worth planning again without hash joins")
    func sqlHashJoin() {
        let join = """
            {"Node Type": "Hash Join", "Parent Relationship": "Outer", "Join Type": "Inner", "Hash Cond": "(batch.id = items.id)", "Plans": [
              {"Node Type": "CTE Scan", "Parent Relationship": "Outer", "CTE Name": "batch", "Alias": "batch"},
              {"Node Type": "Hash", "Parent Relationship": "Inner", "Plans": [
                {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Index Name": "items_pkey", "Relation Name": "items", "Schema": "public", "Alias": "items"}]}]}
            """
        guard case .joinsWholeTable(let problem) = sql.check(explainJSON: sqlPlan(join: join)) else { Issue.record("should be joinsWholeTable"); return }
        #expect(problem.hasPrefix("the `sql` statement reads the whole table at this batch size (Index Scan on public.items with no index condition), not only the batch's rows\nplan:\nModifyTable on public.items\n  CTE batch: LockRows\n"), "\(problem)")
    }

    @Test("sql: a statement that does not read `batch` is refused")
    func sqlIgnoresBatch() {
        let plan = """
            [{"Plan": {"Node Type": "ModifyTable", "Operation": "Update", "Relation Name": "items", "Schema": "public", "Plans": [
              {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "items", "Schema": "public"}]}}]
            """
        guard case .unbounded(let problem) = sql.check(explainJSON: plan) else { Issue.record("should be refused"); return }
        #expect(problem.hasPrefix("the `sql` statement does not read `batch`, so it is not limited to the batch's keys; join it to `batch` on the key"), "\(problem)")
        #expect(problem.hasSuffix("plan:\nModifyTable on public.items\n  Seq Scan on public.items"), "\(problem)")
    }

    @Test("sql: the batch CTE itself must be a bounded range scan")
    func sqlBatchSeqScan() {
        let join = #"{"Node Type": "CTE Scan", "Parent Relationship": "Outer", "CTE Name": "batch", "Alias": "batch"}"#
        let seq = #"{"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "items", "Schema": "public", "Alias": "items_1", "Filter": "(items_1.id > '5'::bigint)"}"#
        guard case .unbounded(let problem) = sql.check(explainJSON: sqlPlan(batchScan: seq, join: join)) else { Issue.record("should be refused"); return }
        #expect(problem.hasPrefix("the batch reads the table with a Seq Scan, not a range scan of the key's index"), "\(problem)")
    }

    @Test("the operators of an index condition, outside literals and quoted names")
    func operators() {
        #expect(PlanGuard.operators(in: Self.bothBounds) == [">", "<="])
        #expect(PlanGuard.operators(in: #"(("we<=ird".id > '-5'::bigint) AND (x.t ~~ 'a>b%'::text))"#) == [">", "~~"])
        #expect(PlanGuard.operators(in: "") == [])
    }
}
