import Foundation

/// Checks the server's plan of a batch statement (`EXPLAIN (FORMAT JSON, VERBOSE)`): the batch
/// must read the table through a bounded range scan of the key's index, both bounds of the key
/// range being index conditions, so that it touches only the keys it walks whatever the batch
/// size. Pure: it reads the plan's JSON, nothing else.
///
/// - For `update` and `delete`, every scan of the table under the `UPDATE`/`DELETE` is an
///   `Index Scan`, `Index Only Scan` or `Bitmap Index Scan` of the key's index whose `Index Cond`
///   holds the lower (`>`) and the upper (`<=`) bound.
/// - For `sql`, the same holds for the scan inside the CTE `batch`; the statement must read
///   `batch` (a `CTE Scan on batch` in the plan, so a statement that ignores the batch and
///   changes the whole table is refused); and any other scan of the table must look rows up by
///   an index condition (a join on the key), never walk the whole table.
public struct PlanGuard: Sendable, Hashable {
    /// The table's schema and name, and those of its partitions.
    public var relations: Set<[String]>
    /// The key's unique index, and its partitions' indexes.
    public var indexes: Set<String>
    /// Whether the statement is a `sql` action (its range scan sits in the CTE `batch`).
    public var isSQLAction: Bool
    /// Whether the statement has a lower bound (a range after a checkpoint) as well as an upper.
    public var hasLowerBound: Bool
    /// A `walk: physical` batch: every scan of the table (each partition's) must be a `Tid Range
    /// Scan` whose `TID Cond` holds both bounds (`ctid > …` and `ctid <= …`).
    public var physical: Bool

    public init(relations: Set<[String]>, indexes: Set<String>, isSQLAction: Bool, hasLowerBound: Bool = true, physical: Bool = false) {
        self.relations = relations
        self.indexes = indexes
        self.isSQLAction = isSQLAction
        self.hasLowerBound = hasLowerBound
        self.physical = physical
    }

    /// What the check found.
    public enum Finding: Sendable, Hashable {
        /// The batch reads only its range: the scans, e.g. `Index Scan using accounts_pkey`.
        case bounded(String)
        /// The problem, for people.
        case unbounded(String)
        /// A `sql` statement whose only problem is a whole-table scan outside the batch CTE (a
        /// hash or merge join to the table): worth planning again with those joins off.
        case joinsWholeTable(String)
    }

    /// A plan node, as EXPLAIN's JSON gives it.
    struct Node {
        var fields: [String: Any]
        var children: [Node]
        var type: String { fields["Node Type"] as? String ?? "?" }
        var relation: [String]? {
            guard let name = fields["Relation Name"] as? String else { return nil }
            return [fields["Schema"] as? String ?? "", name]
        }
        var index: String? { fields["Index Name"] as? String }
        var indexCond: String? { fields["Index Cond"] as? String }
        var relationship: String? { fields["Parent Relationship"] as? String }
        var subplanName: String? { fields["Subplan Name"] as? String }

        init?(_ any: Any?) {
            guard let fields = any as? [String: Any] else { return nil }
            self.fields = fields
            children = (fields["Plans"] as? [Any] ?? []).compactMap(Node.init)
        }

        /// This node and every node below it.
        var all: [Node] { all(skipping: { _ in false }) }

        /// This node and every node below it, leaving out the subtrees `skip` picks.
        func all(skipping skip: (Node) -> Bool) -> [Node] {
            skip(self) ? [] : [self] + children.flatMap { $0.all(skipping: skip) }
        }

        /// Nodes below this one that run as part of it, not as a separate sub-plan or init-plan.
        var inline: [Node] {
            [self] + children.filter { $0.relationship != "SubPlan" && $0.relationship != "InitPlan" }.flatMap(\.inline)
        }

        /// One line per node, indented, for messages.
        func render(depth: Int = 0) -> [String] {
            var line = String(repeating: "  ", count: depth) + type
            if let relation { line += " on " + relation.joined(separator: ".") }
            if let index { line += " using \(index)" }
            if let name = subplanName { line = String(repeating: "  ", count: depth) + name + ": " + line.trimmingCharacters(in: .whitespaces) }
            var lines = [line]
            for key in ["Index Cond", "TID Cond", "Recheck Cond", "Filter"] {
                if let value = fields[key] as? String { lines.append(String(repeating: "  ", count: depth + 2) + "\(key): \(value)") }
            }
            return lines + children.flatMap { $0.render(depth: depth + 1) }
        }
    }

    /// Reads the plan and says whether the batch is bounded.
    public func check(explainJSON: String) -> Finding {
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(explainJSON.utf8)) as? [Any],
              let root = Node((parsed.first as? [String: Any])?["Plan"])
        else { return .unbounded("the server's plan could not be read") }
        let text = root.render().joined(separator: "\n")
        let rangeRoots: [Node]
        if isSQLAction {
            guard root.all.contains(where: { $0.type == "CTE Scan" && ($0.fields["CTE Name"] as? String) == "batch" }) else {
                return .unbounded("the `sql` statement does not read `batch`, so it is not limited to the batch's keys; join it to `batch` on the key, e.g. `UPDATE t SET … FROM batch WHERE t.id = batch.id`\nplan:\n\(text)")
            }
            rangeRoots = root.all.filter { $0.subplanName == "CTE batch" }
        } else {
            rangeRoots = root.all.filter { $0.type == "ModifyTable" }
        }
        let rangeScans = rangeRoots.flatMap(\.inline).filter(isTableScan)
        var described: [String] = []
        for scan in rangeScans {
            switch boundedRange(scan) {
            case .success(let description): described.append(description)
            case .failure(let problem): return .unbounded("\(problem.text)\nplan:\n\(text)")
            }
        }
        if isSQLAction {
            let others = root.all(skipping: { $0.subplanName == "CTE batch" }).filter(isTableScan)
            if let whole = others.first(where: { !hasIndexCondition($0) }) {
                return .joinsWholeTable("the `sql` statement reads the whole table at this batch size (\(whole.type) on \(whole.relation?.joined(separator: ".") ?? "?") with no index condition), not only the batch's rows\nplan:\n\(text)")
            }
        }
        return .bounded(described.isEmpty ? "no rows to read (the range is empty)" : described.joined(separator: "; "))
    }

    private func isTableScan(_ node: Node) -> Bool {
        guard let relation = node.relation, relations.contains(relation) else { return false }
        return node.type != "ModifyTable"
    }

    private func hasIndexCondition(_ node: Node) -> Bool {
        switch node.type {
        case "Index Scan", "Index Only Scan": node.indexCond != nil
        case "Bitmap Heap Scan": node.children.contains { $0.type == "Bitmap Index Scan" && $0.indexCond != nil }
        default: false
        }
    }

    private struct Problem: Error { let text: String }

    /// A scan of the table that walks only the key range: the key's index, both bounds in its
    /// index condition.
    private func boundedRange(_ scan: Node) -> Result<String, Problem> {
        if physical { return pageRange(scan) }
        let indexNode: Node
        switch scan.type {
        case "Index Scan", "Index Only Scan":
            indexNode = scan
        case "Bitmap Heap Scan":
            guard scan.children.count == 1, scan.children[0].type == "Bitmap Index Scan" else {
                return .failure(Problem(text: "the batch reads the table through a combination of bitmaps, not one range of the key's index"))
            }
            indexNode = scan.children[0]
        default:
            return .failure(Problem(text: "the batch reads the table with a \(scan.type), not a range scan of the key's index: every batch would read the whole table"))
        }
        guard let index = indexNode.index, indexes.contains(index) else {
            return .failure(Problem(text: "the batch reads the table through index \(indexNode.index ?? "?"), not the key's index (\(indexes.sorted().joined(separator: ", ")))"))
        }
        let operators = Self.operators(in: indexNode.indexCond ?? "")
        let needed = hasLowerBound ? [">", "<="] : ["<="]
        let missing = needed.filter { !operators.contains($0) }
        guard missing.isEmpty else {
            return .failure(Problem(text: "the batch's range is not an index condition on \(index) (Index Cond: \(indexNode.indexCond ?? "none")): the \(missing == ["<="] ? "upper" : missing == [">"] ? "lower" : "lower and upper") bound would be checked row by row, not by the index"))
        }
        return .success("\(scan.type == "Bitmap Heap Scan" ? "Bitmap Index Scan" : scan.type) using \(index), both bounds in the index condition")
    }

    /// A physical walk's scan: a TID Range Scan, both bounds in its TID condition.
    private func pageRange(_ scan: Node) -> Result<String, Problem> {
        guard scan.type == "Tid Range Scan" else {
            return .failure(Problem(text: "the batch reads the table with a \(scan.type), not a TID Range Scan of its heap pages: every batch would read \(scan.type.contains("Index") ? "rows through an index, not only its pages" : "the whole table")"))
        }
        let condition = scan.fields["TID Cond"] as? String ?? ""
        let missing = [">", "<="].filter { !Self.operators(in: condition).contains($0) }
        guard missing.isEmpty else {
            return .failure(Problem(text: "the batch's page range is not the TID Range Scan's condition (TID Cond: \(condition.isEmpty ? "none" : condition)): the \(missing == ["<="] ? "upper" : missing == [">"] ? "lower" : "lower and upper") bound would be checked row by row"))
        }
        return .success("Tid Range Scan on \(scan.relation?.joined(separator: ".") ?? "?"), both bounds in the TID condition")
    }

    /// The operators of an `Index Cond`, outside string literals and quoted names.
    static func operators(in condition: String) -> Set<String> {
        var result: Set<String> = []
        var current = ""
        var quote: Character?
        for c in condition {
            if let q = quote {
                if c == q { quote = nil }
                continue
            }
            if c == "'" || c == "\"" {
                quote = c
                if !current.isEmpty { result.insert(current); current = "" }
                continue
            }
            if "<>=!~*+-/%^&|#@?".contains(c) {
                current.append(c)
            } else if !current.isEmpty {
                result.insert(current)
                current = ""
            }
        }
        if !current.isEmpty { result.insert(current) }
        return result
    }
}
