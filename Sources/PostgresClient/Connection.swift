import CLibPQ
import Foundation

/// A notice or warning the server sent (`RAISE NOTICE`, implicit index creation …). Notices are
/// collected on the connection rather than printed to stderr.
public struct PostgresNotice: Sendable, Hashable {
    public let severity: String
    public let code: String
    public let message: String
}

private final class NoticeBox {
    var notices: [PostgresNotice] = []
}

/// One PostgreSQL connection over libpq.
///
/// Not `Sendable`: a connection belongs to one thread at a time. To interrupt a statement from
/// another thread or a signal handler, take a `CancelToken` with `makeCancelToken()`.
/// The connection is closed when the object is released.
public final class Connection {
    var handle: OpaquePointer?
    private let noticeBox = NoticeBox()
    /// Statements prepared on this session by `query(_:_:prepared:)`, by SQL text.
    var preparedNames: [String: String] = [:]
    let secrets: [String]
    /// Where this connection goes, without the password (`host=… port=… dbname=… user=…`).
    public let target: String

    /// Opens a connection.
    ///
    /// - Parameters:
    ///   - conninfo: a `postgresql://` URL or `key=value` connection string; nil or empty uses
    ///     libpq's defaults (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSERVICE`, `~/.pgpass`).
    ///   - applicationName: shown in `pg_stat_activity.application_name`; overrides one in `conninfo`.
    ///   - connectTimeoutSeconds: used when the connection string sets no `connect_timeout`.
    /// - Throws: `PostgresError` with SQLSTATE `28P01` for a rejected password and `08001` for any
    ///   other failure to connect. The message names the target and never contains the password.
    public init(_ conninfo: String? = nil, applicationName: String? = nil, connectTimeoutSeconds: Int = 10) throws {
        if let conninfo, !conninfo.isEmpty, let problem = ConnectionInfo.problem(in: conninfo) {
            throw PostgresError(
                code: .sqlclientUnableToEstablishSqlconnection, severity: "FATAL", message: "the connection string \(problem)",
                hint: "the string is not shown, so that no password reaches the logs")
        }
        // Defaults the connection string may override (it comes later, and later keywords win):
        // a dead peer is noticed within about 30 s instead of the kernel's two hours.
        var keys: [String] = ["connect_timeout"] + Self.deadPeerDefaults.map(\.key)
        var values: [String] = [String(connectTimeoutSeconds)] + Self.deadPeerDefaults.map(\.value)
        if let conninfo, !conninfo.isEmpty {
            keys.append("dbname")
            values.append(conninfo)
        }
        if let applicationName {
            keys.append("application_name")
            values.append(applicationName)
        }
        // UTF-8 on every connection, whatever the connection string, PGCLIENTENCODING or the role
        // say (later keywords win): text and keys read back as they were written.
        keys.append("client_encoding")
        values.append("UTF8")
        let conn = Connection.connect(keys: keys, values: values)
        let info = ConnectionInfo(conn: conn, conninfo: conninfo)
        self.secrets = info.secrets
        self.target = info.target
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let raw = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let conn { PQfinish(conn) }
            let message = ConnectionInfo.redact(raw.trimmingCharacters(in: .whitespacesAndNewlines), secrets: info.secrets)
            let code: PostgresError.Code = raw.contains("password authentication failed") || raw.contains("no password supplied")
                ? .invalidPassword
                : Self.slotsTaken(raw) ? .tooManyConnections : .sqlclientUnableToEstablishSqlconnection
            throw PostgresError(
                code: code, severity: "FATAL", message: "could not connect to \(info.target): \(message)",
                hint: code == .invalidPassword
                    ? "check the user and password in the database URL, PGPASSWORD or ~/.pgpass"
                    : code == .tooManyConnections
                    ? "the role's, the database's or the server's connection limit is reached (CONNECTION LIMIT, max_connections)"
                    : "check that the server is running and the host, port and database name are right")
        }
        self.handle = conn
        PQsetNoticeReceiver(conn, noticeReceiver, Unmanaged.passUnretained(noticeBox).toOpaque())
    }

    /// Whether a refused connection was refused for want of a slot: the role's or the database's
    /// `CONNECTION LIMIT`, or the server's `max_connections` (SQLSTATE 53300, which libpq reports
    /// only in the message of a failed connection).
    static func slotsTaken(_ message: String) -> Bool {
        ["too many connections", "remaining connection slots are reserved", "sorry, too many clients"].contains { message.contains($0) }
    }

    /// Client-side TCP keepalives and `tcp_user_timeout` on every connection: a probe after 10 s
    /// idle, then every 5 s, the connection dropped after 3 unanswered (about 25 s); unacknowledged
    /// data drops it after 30 s. libpq ignores them on Unix sockets. A connection string's own
    /// `keepalives…` or `tcp_user_timeout` wins.
    public static let deadPeerDefaults: [(key: String, value: String)] = [
        ("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"), ("keepalives_count", "3"),
        ("tcp_user_timeout", "30000"),
    ]

    private static func connect(keys: [String], values: [String]) -> OpaquePointer? {
        let cKeys = keys.map { strdup($0) } + [nil]
        let cValues = values.map { strdup($0) } + [nil]
        defer {
            cKeys.forEach { free($0) }
            cValues.forEach { free($0) }
        }
        return cKeys.withUnsafeBufferPointer { k in
            cValues.withUnsafeBufferPointer { v in
                k.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: k.count) { kp in
                    v.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: v.count) { vp in
                        PQconnectdbParams(kp, vp, 1)
                    }
                }
            }
        }
    }

    deinit { close() }

    /// Closes the connection now; later calls fail with a connection error.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// Whether libpq still considers the connection usable.
    public var isOpen: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// The backend process id of this session (`pg_backend_pid()`).
    public var backendPID: Int32 {
        guard let handle else { return 0 }
        return PQbackendPID(handle)
    }

    /// The server version as a number (`150018` for 15.18).
    public var serverVersion: Int {
        guard let handle else { return 0 }
        return Int(PQserverVersion(handle))
    }

    /// The value libpq uses for a connection keyword (`keepalives_idle`, `application_name` …),
    /// from `PQconninfo`; nil when it is unset. Never call it for `password`.
    public func option(_ keyword: String) -> String? {
        guard let handle, let options = PQconninfo(handle) else { return nil }
        defer { PQconninfoFree(options) }
        var index = 0
        while let key = options[index].keyword {
            if String(cString: key) == keyword { return options[index].val.map { String(cString: $0) } }
            index += 1
        }
        return nil
    }

    /// Returns and clears the notices received so far.
    public func drainNotices() -> [PostgresNotice] {
        defer { noticeBox.notices.removeAll() }
        return noticeBox.notices
    }

    /// A token that cancels the statement running on this connection, from any thread.
    public func makeCancelToken() -> CancelToken? {
        guard let handle, let cancel = PQgetCancel(handle) else { return nil }
        return CancelToken(cancel)
    }

    /// Quotes an identifier with libpq's `PQescapeIdentifier` (which knows the connection's
    /// encoding). `Identifier.quote` gives the same result without a connection.
    public func escapeIdentifier(_ name: String) throws -> String {
        let conn = try liveHandle()
        guard let escaped = PQescapeIdentifier(conn, name, name.utf8.count) else {
            throw PostgresError(code: .clientError, severity: "CLIENT", message: lastErrorMessage(conn))
        }
        defer { PQfreemem(escaped) }
        return String(cString: escaped)
    }

    /// Whether `pipeline` prepares the statements marked `prepared` (once per session, as named
    /// statements). Set it only on a connection known to reach its own backend directly
    /// (`pg_backend_pid()` is the pid libpq was told): through a transaction-mode pooler a named
    /// statement would be missing on the next server connection.
    public var preparesStatements = false

    /// Settings pinned by `pin(_:)`: every statement of this session runs under them, whatever the
    /// role or the database set.
    public internal(set) var pins: [(name: String, value: String)] = []
    /// Whether `pins` are set for the whole session (a direct connection); otherwise each
    /// transaction sets them (`begin`, and statements sent outside a transaction).
    public internal(set) var pinnedForSession = false
    /// Whether this connection reaches its backend directly, as `pin(_:)` found; nil before.
    public internal(set) var direct: Bool?

    func liveHandle() throws -> OpaquePointer {
        guard let handle else {
            throw PostgresError(code: .connectionFailure, severity: "CLIENT", message: "the connection is closed")
        }
        return handle
    }

    func lastErrorMessage(_ conn: OpaquePointer) -> String {
        ConnectionInfo.redact(
            String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines), secrets: secrets)
    }

    /// An error libpq raised itself, without a SQLSTATE from the server. When the socket broke
    /// libpq does not always mark the connection bad before it returns, so its wording is checked
    /// too.
    func clientError(_ conn: OpaquePointer) -> PostgresError {
        let message = lastErrorMessage(conn)
        let lost = PQstatus(conn) != CONNECTION_OK
            || ["server closed the connection", "no connection to the server", "could not receive data",
                "could not send data", "connection not open", "terminating connection"].contains { message.contains($0) }
        return PostgresError(
            code: lost ? .connectionFailure : .clientError, severity: "CLIENT", message: message)
    }
}

private let noticeReceiver: PQnoticeReceiver = { arg, result in
    guard let arg, let result else { return }
    let box = Unmanaged<NoticeBox>.fromOpaque(arg).takeUnretainedValue()
    func field(_ code: Int32) -> String { PQresultErrorField(result, code).map { String(cString: $0) } ?? "" }
    box.notices.append(
        PostgresNotice(
            severity: field(BF_DIAG_SEVERITY), code: field(BF_DIAG_SQLSTATE),
            message: field(BF_DIAG_MESSAGE_PRIMARY)))
}
