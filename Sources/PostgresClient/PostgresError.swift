/// An error reported by PostgreSQL or by libpq while talking to it.
///
/// A struct rather than a closed enum, so that new codes and fields can be added without breaking
/// callers. `code` is the five-character SQLSTATE; errors raised on the client side (a lost
/// connection, a refused connection) carry the SQLSTATE that PostgreSQL documents for them
/// (`08006`, `08001`) so that one classification serves both.
public struct PostgresError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A SQLSTATE code such as `55P03`.
    public struct Code: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
        /// The five characters of the SQLSTATE.
        public let raw: String
        public init(_ raw: String) { self.raw = raw }
        public init(stringLiteral value: String) { self.raw = value }
        public var description: String { raw }
        /// The first two characters: the SQLSTATE class (`08` for connection exceptions).
        public var errorClass: Substring { raw.prefix(2) }

        public static let lockNotAvailable: Code = "55P03"
        public static let deadlockDetected: Code = "40P01"
        public static let serializationFailure: Code = "40001"
        public static let queryCanceled: Code = "57014"
        public static let adminShutdown: Code = "57P01"
        public static let crashShutdown: Code = "57P02"
        public static let cannotConnectNow: Code = "57P03"
        public static let idleSessionTimeout: Code = "57P05"
        public static let idleInTransactionSessionTimeout: Code = "25P03"
        public static let connectionFailure: Code = "08006"
        public static let sqlclientUnableToEstablishSqlconnection: Code = "08001"
        public static let invalidPassword: Code = "28P01"
        public static let tooManyConnections: Code = "53300"
        public static let uniqueViolation: Code = "23505"
        public static let undefinedTable: Code = "42P01"
        public static let undefinedColumn: Code = "42703"
        public static let syntaxError: Code = "42601"
        /// Used when libpq reports an error without a SQLSTATE on a healthy connection.
        public static let clientError: Code = "XX000"
    }

    /// The SQLSTATE.
    public var code: Code
    /// `ERROR`, `FATAL`, `PANIC` (never localized), or `CLIENT` for errors raised by libpq itself.
    public var severity: String
    /// The primary human-readable message.
    public var message: String
    /// Optional secondary message with more detail about the problem.
    public var detail: String?
    /// Optional suggestion what to do about the problem.
    public var hint: String?

    public init(code: Code, severity: String = "ERROR", message: String, detail: String? = nil, hint: String? = nil) {
        self.code = code
        self.severity = severity
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var text = "\(severity) \(code): \(message)"
        if let detail { text += " (detail: \(detail))" }
        if let hint { text += " (hint: \(hint))" }
        return text
    }

    /// Whether the connection this error came from can no longer be used: a connection
    /// exception (class `08`), a shutdown, an idle-session or idle-in-transaction timeout, or any
    /// other error of severity `FATAL` or `PANIC` (the server ends the session after sending it).
    /// A refused login (class `28`) or a missing database (`3D000`) is not: connecting again
    /// would fail the same way.
    public var isConnectionLost: Bool {
        if code.errorClass == "28" || code.errorClass == "3D" { return false }
        return code.errorClass == "08" || Self.sessionEnding.contains(code) || severity == "FATAL" || severity == "PANIC"
    }

    private static let sessionEnding: Set<Code> = [
        .adminShutdown, .crashShutdown, .cannotConnectNow, .idleSessionTimeout, .idleInTransactionSessionTimeout,
    ]

    /// What a batch runner should do when a batch transaction fails with this error.
    public var batchDisposition: BatchDisposition {
        switch code {
        case .lockNotAvailable: return .retry(.lockTimeout)
        case .deadlockDetected: return .retry(.deadlock)
        case .serializationFailure: return .retry(.serializationFailure)
        case .queryCanceled: return .retry(.statementTimeout)
        case _ where isConnectionLost: return .retry(.connectionLost)
        default: return .permanent
        }
    }
}

/// The classification of a failed batch: try it again, or stop the job.
public enum BatchDisposition: Sendable, Hashable {
    /// The batch was rolled back for a transient reason; the same batch can be tried again.
    case retry(RetryReason)
    /// Trying again would fail the same way; the job stops.
    case permanent

    /// Whether the batch may be tried again.
    public var isRetryable: Bool {
        if case .retry = self { return true }
        return false
    }
}

/// Why a batch is being retried; these names appear in events and metrics.
public enum RetryReason: String, Sendable, Hashable, CaseIterable, Codable {
    case lockTimeout = "lock_timeout"
    case deadlock
    case serializationFailure = "serialization_failure"
    case statementTimeout = "statement_timeout"
    case connectionLost = "connection_lost"
}
