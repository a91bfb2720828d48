import CLibPQ
import Foundation

/// Settings pinned for the session, transactions, and whether the connection reaches its backend
/// directly.
extension Connection {
    /// Pins settings for everything sent on this session, above what `ALTER ROLE … SET` or
    /// `ALTER DATABASE … SET` made the default. On a connection that reaches its backend directly
    /// they are set once, for the session (`set_config(…, false)`, in the same statement that
    /// finds the connection direct). Through a pooler a session setting would stay on a server
    /// connection that other clients use next, so they are set for each transaction instead:
    /// `begin(_:)` sets them, and `query` wraps a statement sent outside a transaction in one of
    /// its own (one round trip). Returns whether the connection is direct.
    @discardableResult
    public func pin(_ settings: [(name: String, value: String)]) throws -> Bool {
        let calls: [SQL] = settings.map { "set_config(\(bind: $0.name), \(bind: $0.value), false)" }
        let pinned: SQL = calls.isEmpty ? "NULL" : "CASE WHEN pg_backend_pid() = \(bind: Int64(backendPID))::int THEN concat_ws(',', \(calls.joined(separator: ", "))) END"
        let row = try query("SELECT pg_backend_pid() AS pid, \(pinned) AS pinned" as SQL).first
        let isDirect = isDirect(serverPID: row?["pid"].int64)
        direct = isDirect
        pins = settings
        pinnedForSession = isDirect
        return isDirect
    }

    /// `SELECT set_config(…, true), …` for the pins, when this session does not hold them itself.
    var localPins: String? {
        guard !pinnedForSession, !pins.isEmpty else { return nil }
        return Self.setLocal(pins)
    }

    /// One statement that sets every setting for the current transaction, as `SET LOCAL` would:
    /// `SELECT set_config('name', 'value', true), …`. For names and values of the caller's own
    /// (quotes are doubled; no backslashes expected).
    public static func setLocal(_ settings: [(name: String, value: String)]) -> String {
        func literal(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
        return "SELECT " + settings.map { "set_config(\(literal($0.name)), \(literal($0.value)), true)" }.joined(separator: ", ")
    }

    /// The statements that open a transaction with `characteristics` (`ISOLATION LEVEL READ
    /// COMMITTED`, `… READ ONLY`): `BEGIN …`, then the pins where the session does not hold them.
    public func beginStatements(_ characteristics: String = "ISOLATION LEVEL READ COMMITTED") -> [Statement] {
        [Statement("BEGIN " + characteristics)] + (localPins.map { [Statement($0)] } ?? [])
    }

    /// Opens a transaction with `characteristics`, under the pins (`beginStatements`).
    public func begin(_ characteristics: String = "ISOLATION LEVEL READ COMMITTED") throws {
        try execute(beginStatements(characteristics).map(\.sql).joined(separator: "; "))
    }

    /// Whether this session is outside any transaction block.
    public var isIdle: Bool {
        guard let handle else { return false }
        return PQtransactionStatus(handle) == PQTRANS_IDLE
    }

    /// Whether this connection reaches its backend directly, not through a pooler: the server's
    /// `pg_backend_pid()` is the pid libpq was told at connection.
    public func isDirect() throws -> Bool {
        isDirect(serverPID: try query("SELECT pg_backend_pid() AS pid").first?["pid"].int64)
    }

    /// `isDirect()` for a `pg_backend_pid()` read by a statement of the caller's own.
    public func isDirect(serverPID: Int64?) -> Bool {
        serverPID == Int64(backendPID)
    }

    /// Runs `body` between `BEGIN` (with `characteristics`, under the pins) and `COMMIT`; rolls
    /// back and rethrows when `body` throws.
    @discardableResult
    public func transaction<T>(_ characteristics: String = "ISOLATION LEVEL READ COMMITTED", _ body: (Connection) throws -> T) throws -> T {
        try begin(characteristics)
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            if isOpen { try? execute("ROLLBACK") }
            throw error
        }
    }
}
