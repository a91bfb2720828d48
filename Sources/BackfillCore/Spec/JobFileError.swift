/// A job file that cannot be run, with the file, the field and what to do about it.
public struct JobFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The job file's path as given.
    public var file: String
    /// The field, dotted (`batch.size`), or nil for the file as a whole.
    public var field: String?
    /// The 1-based line in the file, when known.
    public var line: Int?
    /// What is wrong.
    public var problem: String
    /// What to do about it.
    public var fix: String
    /// The file's other problems, found in the same pass (validation reports them all at once).
    public var others: [JobFileError] = []

    public init(file: String, field: String?, line: Int? = nil, problem: String, fix: String) {
        self.file = file
        self.field = field
        self.line = line
        self.problem = problem
        self.fix = fix
    }

    /// Every problem: this one and the others found in the same pass.
    public var all: [JobFileError] {
        var first = self
        first.others = []
        return [first] + others
    }

    public var description: String {
        all.map { error in
            var location = error.file
            if let line = error.line { location += ":\(line)" }
            let subject = error.field.map { "field `\($0)`: " } ?? ""
            return "\(location): \(subject)\(error.problem)\n  fix: \(error.fix)"
        }.joined(separator: "\n") + (others.isEmpty ? "" : "\n(\(others.count + 1) problems in this file)")
    }
}
