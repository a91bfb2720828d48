import PostgresClient

/// Why a run failed, carried to the exit message, the JSON `error` event and `last_error`.
public struct RunFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The SQLSTATE, when the database reported the failure.
    public var sqlstate: String?
    /// The range the failing batch walked, and the key after which it started (nil: the
    /// range's start).
    public var range: Int?
    public var afterKey: [String]?
    /// The key whose row could not be written, when the failing batch was bisected to find it.
    public var key: [String]?
    /// How often the batch was tried, and whether the retries ran out.
    public var attempts: Int
    public var exhausted: Bool
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(sqlstate: String? = nil, range: Int? = nil, afterKey: [String]? = nil, key: [String]? = nil, attempts: Int = 1, exhausted: Bool = false,
                message: String, detail: String? = nil, hint: String? = nil) {
        self.sqlstate = sqlstate
        self.range = range
        self.afterKey = afterKey
        self.key = key
        self.attempts = attempts
        self.exhausted = exhausted
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// Any other error, as a failure.
    public init(_ error: any Error) {
        if let error = error as? RunFailure {
            self = error
        } else if let error = error as? PostgresError {
            self.init(sqlstate: error.code.raw, message: error.message, detail: error.detail, hint: error.hint)
        } else {
            self.init(message: "\(error)")
        }
    }

    public var description: String {
        var text = ""
        if let range {
            text += "batch in range \(range) after key \(afterKey.map { "(" + $0.joined(separator: ", ") + ")" } ?? "(start)") failed"
            if let key { text += " at key (\(key.joined(separator: ", ")))" }
            text += exhausted ? " \(attempts) times, giving up: " : ": "
        }
        if let sqlstate { text += "SQLSTATE \(sqlstate) " }
        text += message
        if let detail { text += " (\(detail))" }
        if let hint { text += " (hint: \(hint))" }
        return text
    }
}
