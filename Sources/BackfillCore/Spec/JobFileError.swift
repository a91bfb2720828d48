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

    public init(file: String, field: String?, line: Int? = nil, problem: String, fix: String) {
        self.file = file
        self.field = field
        self.line = line
        self.problem = problem
        self.fix = fix
    }

    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        let subject = field.map { "field `\($0)`: " } ?? ""
        return "\(location): \(subject)\(problem)\n  fix: \(fix)"
    }
}
