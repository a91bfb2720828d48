import Yams

extension JobSpec {
    /// Statements a finalize step may not be: they would end or escape the step's own
    /// transaction (whose commit records the step), or cannot run inside one.
    static let refusedFinalizeWords: Set<String> = [
        "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare", "set", "reset", "vacuum",
    ]

    /// The first word of a statement, lowercased, after white space and comments; nil when there
    /// is none.
    static func leadingWord(_ sql: String) -> String? {
        var rest = Substring(sql)
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.hasPrefix("--") {
                rest = rest.drop { $0 != "\n" }
            } else if rest.hasPrefix("/*") {
                // Nested block comments, as PostgreSQL reads them.
                var depth = 0
                var index = rest.startIndex
                while index < rest.endIndex {
                    let next = rest.index(after: index)
                    if rest[index...].hasPrefix("/*") { depth += 1; index = rest.index(after: next); continue }
                    if rest[index...].hasPrefix("*/") { depth -= 1; index = rest.index(after: next); if depth == 0 { break }; continue }
                    index = next
                }
                rest = rest[index...]
            } else {
                break
            }
        }
        let word = rest.prefix { $0.isLetter || $0 == "_" }
        return word.isEmpty ? nil : word.lowercased()
    }
}

extension FieldReader {
    /// `finalize:`: a list of SQL statements (or one), each exactly one statement (one trailing
    /// `;` allowed and dropped), no transaction control; not with `repeat: true`.
    func finalizeSteps(_ fields: [String: Node], repeats: Bool) -> [String] {
        guard let node = fields["finalize"] else { return [] }
        let items: [Node]
        switch node {
        case .scalar: items = [node]
        case .sequence(let sequence): items = Array(sequence)
        default:
            report(error("finalize", node, "must be a list of SQL statements", fix: "write e.g. `finalize: [\"ALTER TABLE t VALIDATE CONSTRAINT c\"]`, one statement per item"))
            return []
        }
        if repeats {
            report(error("finalize", node, "does not go with `repeat: true`: a repeating job is never finished for good",
                         fix: "run the finalize statements as a job of their own once the work stops, or remove `repeat`"))
        }
        if items.isEmpty {
            report(error("finalize", node, "is empty", fix: "list at least one statement, or remove the field"))
        }
        var steps: [String] = []
        for (index, item) in items.enumerated() {
            let field = "finalize step \(index + 1)"
            guard case .scalar(let scalar) = item,
                  case let text = scalar.string.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty
            else {
                report(error(field, item, "must be one SQL statement as text", fix: "write the statement on one line, or as a `|` block"))
                continue
            }
            if let problem = SQLFragment.problem(in: text, allowTrailingSemicolon: true) {
                report(error(field, item, problem, fix: "write exactly one SQL statement per item; give each statement an item of its own"))
                continue
            }
            let statement = SQLFragment.droppingTrailingSemicolon(text)
            if let word = JobSpec.leadingWord(statement), JobSpec.refusedFinalizeWords.contains(word) {
                report(error(field, item, "`\(word.uppercased())` cannot be a finalize step: each step runs in a transaction of its own, which Backfill begins and commits with the step's record",
                             fix: "write the DDL itself (ALTER TABLE …, DROP …); Backfill sets lock_timeout, and VACUUM or CONCURRENTLY work belongs outside the job"))
                continue
            }
            steps.append(SQLFragment.endsInLineComment(statement) ? statement + "\n" : statement)
        }
        return steps
    }
}
