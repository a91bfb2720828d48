@testable import BackfillCore
import PostgresClient
import Testing

/// The pure decisions of `walk: physical`: the job file's rules, page arithmetic, the batch
/// statement's `where` rule, the range split, the plan guard, and the machine's answer to a batch
/// that broke the rule. No database.
@Suite("Physical walk logic")
struct PhysicalWalkLogicTests {
    static let job = "name: logs-fill\ntable: logs\nwalk: physical\nwhere: done IS NOT TRUE\nset: {done: \"true\", writes: writes + 1}\n"

    @Test("walk: physical: the key is ctid, batches are sized in pages (8, 1…8192), and the fingerprint differs from a key walk's")
    func parses() throws {
        let spec = try JobSpec.parse(yaml: Self.job, file: "logs.yaml")
        #expect(spec.walk == .physical && spec.key == ["ctid"])
        #expect((spec.batch.size, spec.batch.min, spec.batch.max) == (8, 1, 8192))
        let sized = try JobSpec.parse(yaml: Self.job + "batch: {pages: 16, min_pages: 2, max_pages: 64}", file: "logs.yaml")
        #expect((sized.batch.size, sized.batch.min, sized.batch.max) == (16, 2, 64))
        let keyed = try JobSpec.parse(yaml: Self.job.replacingOccurrences(of: "walk: physical", with: "key: [ctid]"), file: "logs.yaml")
        #expect(keyed.fingerprint != spec.fingerprint)
    }

    @Test("refused with the field and a fix", arguments: [
        ("name: x\ntable: t\nwalk: physical\nset: {a: 1}", "where", "required with `walk: physical`"),
        ("name: x\ntable: t\nwalk: physical\nwhere: a IS NULL\nsql: UPDATE t SET a = 1 FROM batch", "sql", "cannot be used with `walk: physical`"),
        ("name: x\ntable: t\nwalk: physical\nkey: [id]\nwhere: a IS NULL\nset: {a: 1}", "key", "exclude each other"),
        ("name: x\ntable: t\nwalk: physical\nwhere: a IS NULL\nset: {a: 1}\njournal: true", "journal", "no key"),
        ("name: x\ntable: t\nwalk: physical\nwhere: a IS NULL\nset: {a: 1}\nbatch: {size: 100}", "batch.size", "heap pages"),
        ("name: x\ntable: t\nkey: [id]\nset: {a: 1}\nbatch: {max_pages: 100}", "batch.max_pages", "heap pages"),
        ("name: x\ntable: t\nwalk: physical\nwhere: a IS NULL\nset: {a: 1}\nbatch: {pages: 100, max_pages: 10}", "batch.pages", "outside `batch.min_pages`"),
        ("name: x\ntable: t\nwalk: sideways\nkey: [id]\nset: {a: 1}", "walk", "is not a walk"),
    ])
    func refused(yaml: String, field: String, problem: String) {
        do {
            _ = try JobSpec.parse(yaml: yaml, file: "jobs/bad.yaml")
            Issue.record("accepted: \(yaml)")
        } catch {
            let all = [error] + error.others
            #expect(all.contains { $0.field == field && $0.description.contains(problem) && !$0.fix.isEmpty }, "\(all)")
        }
    }

    @Test("a batch's pages by arithmetic: from the checkpoint's page, at most the range's last, nothing at its end")
    func pageArithmetic() {
        #expect(BatchStatements.pageBatch(after: ["(0,0)"], ceiling: ["(100,0)"], pages: 8)! == (["(8,0)"], 8))
        #expect(BatchStatements.pageBatch(after: ["(96,0)"], ceiling: ["(100,0)"], pages: 8)! == (["(100,0)"], 4))
        // After a quarantined row inside page 5: the rest of page 5, then whole pages.
        #expect(BatchStatements.pageBatch(after: ["(5,17)"], ceiling: ["(100,0)"], pages: 2)! == (["(7,0)"], 2))
        #expect(BatchStatements.pageBatch(after: ["(100,0)"], ceiling: ["(100,0)"], pages: 8) == nil)
        #expect(BatchStatements.pageBatch(after: ["(0,0)"], ceiling: ["(0,0)"], pages: 8) == nil)
        #expect(BatchStatements.pageBatch(after: ["(0,0)"], ceiling: nil, pages: 8) == nil)
        #expect(BatchStatements.page(of: ["(123,45)"]) == 123 && BatchStatements.page(of: ["12"]) == nil)
    }

    @Test("the ranges tile the pages: from 0 to the end, none smaller than batch.max_pages, 4 a worker at most")
    func pageBounds() {
        for (pages, workers, minimum) in [(Int64(0), 1, Int64(8192)), (100, 2, 8), (33_333, 1, 8192), (1_000_000, 8, 64), (7, 4, 1)] {
            let bounds = RangeSplitter.pageBounds(pages: pages, workers: workers, minimumPages: minimum)
            #expect(bounds.first == 0 && bounds.last == pages)
            #expect(zip(bounds, bounds.dropFirst()).allSatisfy { $0 <= $1 })
            #expect(bounds.count - 1 <= 4 * workers)
            if bounds.count > 2 { #expect(zip(bounds, bounds.dropFirst()).allSatisfy { $1 - $0 >= minimum }, "\(bounds)") }
        }
        #expect(RangeSplitter.pageBounds(pages: 1_000_000, workers: 2, minimumPages: 64).count == 9)
    }

    @Test("a catch-up pass walks the pages that still hold matching rows, merged into runs across small gaps")
    func catchUpRuns() {
        let runs = RangeSplitter.pageRuns([900, 5, 3, 4, 3, 20, 40, 2000, 2127, 2255], gap: 16)
        #expect(runs.map { [$0.first, $0.end] } == [[3, 21], [40, 41], [900, 901], [2000, 2001], [2127, 2128], [2255, 2256]])
        #expect(RangeSplitter.pageRuns([0, 127, 254]).map { [$0.first, $0.end] } == [[0, 255]])
        #expect(RangeSplitter.pageRuns([]).isEmpty)
    }

    @Test("the batch statement: ctid bounds, `where`, each changed row's `where` read on its new version, the count in the checkpoint")
    func statement() throws {
        let spec = try JobSpec.parse(yaml: Self.job, file: "logs.yaml")
        let statements = BatchStatements(spec: spec, key: [KeyColumn(name: "ctid", type: "tid")])
        let checkpoint = try #require(CheckpointStore(schema: "backfill").checkpoint(
            "logs-fill", range: 0, lastKey: ["(8,0)"], keys: 8, worker: "w", rows: "(SELECT rows FROM tally)", outside: "(SELECT outside FROM tally)", stillMatching: "(SELECT still FROM tally)"))
        let text = statements.batch(afterKey: true, checkpoint: checkpoint).text
        #expect(text.contains(#""ctid" > $1::tid AND "ctid" <= $2::tid AND (done IS NOT TRUE)"#), "\(text)")
        #expect(text.contains("RETURNING false AS outside, coalesce((done IS NOT TRUE), false) AS still"), "\(text)")
        #expect(text.contains("count(*) FILTER (WHERE still) AS still") && text.contains("last_batch_still_matching = (SELECT still FROM tally)"), "\(text)")
        #expect(text.hasSuffix("SELECT rows, outside, still FROM tally"))
        let delete = BatchStatements(spec: try JobSpec.parse(yaml: "name: p\ntable: logs\nwalk: physical\nwhere: old\naction: delete", file: "p.yaml"),
                                     key: [KeyColumn(name: "ctid", type: "tid")])
        #expect(delete.batch.text.contains("RETURNING false AS outside, false AS still"), "\(delete.batch.text)")
        // A key walk's statement is what it was.
        let keyed = BatchStatements(spec: try JobSpec.parse(yaml: "name: k\ntable: t\nkey: [id]\nset: {a: 1}", file: "k.yaml"), key: [KeyColumn(name: "id", type: "bigint")])
        #expect(!keyed.batch.text.contains("still") && keyed.batch.text.contains("RETURNING NOT ("))
    }

    func tidRangePlan(_ scan: String) -> String {
        """
        [{"Plan": {"Node Type": "Aggregate", "Strategy": "Plain", "Plans": [
          {"Node Type": "ModifyTable", "Operation": "Update", "Parent Relationship": "InitPlan", "Subplan Name": "CTE changed",
           "Relation Name": "logs", "Schema": "public", "Alias": "logs", "Plans": [\(scan)]},
          {"Node Type": "CTE Scan", "Parent Relationship": "Outer", "CTE Name": "changed", "Alias": "changed"}]}}]
        """
    }

    @Test("the plan guard of a physical batch: a TID Range Scan with both bounds passes; one bound, a Seq Scan or an Index Scan is refused")
    func planGuard() {
        let guard_ = PlanGuard(relations: [["public", "logs"]], indexes: [], isSQLAction: false, physical: true)
        func scan(_ type: String, cond: String?) -> String {
            #"{"Node Type": "\#(type)", "Parent Relationship": "Outer", "Relation Name": "logs", "Schema": "public", "Alias": "logs""#
                + (cond.map { #", "TID Cond": "\#($0)""# } ?? "") + #", "Filter": "(logs.done IS NOT TRUE)"}"#
        }
        let both = guard_.check(explainJSON: tidRangePlan(scan("Tid Range Scan", cond: "((logs.ctid > '(0,0)'::tid) AND (logs.ctid <= '(8,0)'::tid))")))
        #expect(both == .bounded("Tid Range Scan on public.logs, both bounds in the TID condition"))
        for (type, cond, problem) in [("Tid Range Scan", "(logs.ctid <= '(8,0)'::tid)", "the lower bound"), ("Seq Scan", nil, "Seq Scan, not a TID Range Scan"),
                                      ("Index Scan", nil, "rows through an index")] {
            guard case .unbounded(let text) = guard_.check(explainJSON: tidRangePlan(scan(type, cond: cond))) else { Issue.record("\(type) passed"); continue }
            #expect(text.contains(problem), "\(text)")
        }
    }

    @Test("a batch whose changed rows still match `where` stops the job naming `where` and `set`, never quarantined as a bad row")
    func stillMatchingStops() throws {
        let spec = try JobSpec.parse(yaml: Self.job + "on_error: {action: skip}\nthrottle: {when_blocking: false}", file: "logs.yaml")
        let session = ScriptedSession(keys: Array(1...100))
        let refused = PostgresError(code: "23514", message: #"new row for relation "ranges" violates check constraint "ranges_batch_leaves_where_false""#)
        session.fail = { name, _ in name == "write" ? (refused, nil) : nil }
        var options = RunOptions(database: "host=/nonexistent")
        options.dryRun = true
        let context = RunContext(spec: spec, options: options, stop: StopSignal(), emit: { _ in })
        let result = Worker(context: context, session: session, index: 0, clock: ManualClock()).run()
        guard case .failed(let failure) = result else { Issue.record("expected a failure, got \(result)"); return }
        #expect(failure.message.contains("ranges_batch_leaves_where_false"))
        #expect(failure.message.contains("done IS NOT TRUE") && failure.message.contains("writes + 1") && failure.message.contains("logs.yaml"), "\(failure.message)")
        #expect(!session.calls.contains("quarantine") && !session.calls.contains("splitPoint"), "\(session.calls)")
        #expect(session.writes.isEmpty)
    }
}
