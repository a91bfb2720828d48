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
    private var handle: OpaquePointer?
    private let noticeBox = NoticeBox()
    /// Statements prepared on this session by `query(_:_:prepared:)`, by SQL text.
    private var preparedNames: [String: String] = [:]
    private let secrets: [String]
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

    /// Runs one statement with parameters (`$1`, `$2` …) sent separately from the SQL text.
    ///
    /// With `prepared`, the statement is parsed and planned once per session (`PQprepare`) and
    /// then only executed: for small statements run many times, such as checkpoint updates,
    /// whose generic plan is as good as a custom one. Named statements live in the session: do not
    /// use `prepared` on a connection that may go through a transaction-mode pooler (PgBouncer
    /// before 1.21 does not carry them from one server connection to the next).
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = [], prepared: Bool = false) throws -> QueryResult {
        let conn = try liveHandle()
        if localPins != nil, isIdle {
            // Pins the session does not hold: the statement runs in a transaction that sets them.
            do {
                let results = try pipeline(beginStatements() + [Statement(sql, parameters, prepared: prepared), Statement("COMMIT")])
                return results[results.count - 2]
            } catch {
                if isOpen, !isIdle { try? execute("ROLLBACK") }
                throw error
            }
        }
        var name: String?
        if prepared {
            if let known = preparedNames[sql] {
                name = known
            } else {
                let fresh = "backfill_\(preparedNames.count)"
                _ = try consume(PQprepare(conn, fresh, sql, Int32(parameters.count), nil), conn: conn)
                preparedNames[sql] = fresh
                name = fresh
            }
        }
        let result: OpaquePointer? = Self.withEncoded(parameters) { values in
            if let name { return PQexecPrepared(conn, name, Int32(parameters.count), values, nil, nil, 0) }
            return PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try consume(result, conn: conn)
    }

    /// Parameters as the C strings libpq takes (text format), for the duration of `body`.
    private static func withEncoded<T>(_ parameters: [PostgresValue], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> T) -> T {
        let encoded: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.textEncoded.map { strdup($0) } ?? nil }
        defer { encoded.forEach { free($0) } }
        return encoded.withUnsafeBufferPointer { buffer in
            body(buffer.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: UnsafePointer<CChar>?.self) })
        }
    }

    /// One statement of a pipeline: its SQL and its parameters.
    public struct Statement: Sendable {
        public var sql: String
        public var parameters: [PostgresValue]
        /// Prepare it once per session and then only execute it, when the connection
        /// `preparesStatements`: for statements of fixed text run at every batch, whose parse
        /// and plan would otherwise cost more than their execution.
        public var prepared: Bool
        public init(_ sql: String, _ parameters: [PostgresValue] = [], prepared: Bool = false) {
            self.sql = sql
            self.parameters = parameters
            self.prepared = prepared
        }
    }

    /// Whether `pipeline` prepares the statements marked `prepared` (once per session, as named
    /// statements). Set it only on a connection known to reach its own backend directly
    /// (`pg_backend_pid()` is the pid libpq was told): through a transaction-mode pooler a named
    /// statement would be missing on the next server connection.
    public var preparesStatements = false

    /// Settings pinned by `pin(_:)`: every statement of this session runs under them, whatever the
    /// role or the database set.
    public private(set) var pins: [(name: String, value: String)] = []
    /// Whether `pins` are set for the whole session (a direct connection); otherwise each
    /// transaction sets them (`begin`, and statements sent outside a transaction).
    public private(set) var pinnedForSession = false
    /// Whether this connection reaches its backend directly, as `pin(_:)` found; nil before.
    public private(set) var direct: Bool?

    /// Pins settings for everything sent on this session, above what `ALTER ROLE … SET` or
    /// `ALTER DATABASE … SET` made the default. On a connection that reaches its backend directly
    /// they are set once, for the session (`set_config(…, false)`, in the same statement that
    /// finds the connection direct). Through a pooler a session setting would stay on a server
    /// connection that other clients use next, so they are set for each transaction instead:
    /// `begin(_:)` sets them, and `query` wraps a statement sent outside a transaction in one of
    /// its own (one round trip). Returns whether the connection is direct.
    @discardableResult
    public func pin(_ settings: [(name: String, value: String)]) throws -> Bool {
        let calls = settings.enumerated().map { i, _ in "set_config($\(2 * i + 2), $\(2 * i + 3), false)" }
        let pinned = calls.isEmpty ? "NULL" : "CASE WHEN pg_backend_pid() = $1::int THEN concat_ws(',', \(calls.joined(separator: ", "))) END"
        let values: [PostgresValue] = [.int(Int64(backendPID))] + settings.flatMap { [PostgresValue.text($0.name), .text($0.value)] }
        let row = try query("SELECT pg_backend_pid() AS pid, \(pinned) AS pinned", values).first
        let isDirect = isDirect(serverPID: row?["pid"].int64)
        direct = isDirect
        pins = settings
        pinnedForSession = isDirect
        return isDirect
    }

    /// `SELECT set_config(…, true), …` for the pins, when this session does not hold them itself.
    private var localPins: String? {
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

    /// Sends every statement at once in libpq's pipeline mode and reads their results: one
    /// round trip for all of them, and the server runs them one after another without waiting
    /// for the client. Each is exactly one statement (the extended protocol). When one fails,
    /// the server skips the rest, and the first failure is thrown after every result was read;
    /// a transaction it was in is then aborted and needs `ROLLBACK`.
    public func pipeline(_ statements: [Statement]) throws -> [QueryResult] {
        let conn = try liveHandle()
        guard PQenterPipelineMode(conn) == 1 else { throw clientError(conn) }
        defer { PQexitPipelineMode(conn) }
        // What was sent, in order: a statement's Parse under a new name (when it is to be
        // prepared and is not yet), or a statement to run.
        var sent: [(sql: String, preparing: String?)] = []
        for statement in statements {
            var name: String?
            if statement.prepared, preparesStatements {
                if let known = preparedNames[statement.sql] {
                    name = known
                } else {
                    let fresh = "backfill_\(preparedNames.count + sent.count { $0.preparing != nil })"
                    guard PQsendPrepare(conn, fresh, statement.sql, Int32(statement.parameters.count), nil) == 1 else { throw clientError(conn) }
                    sent.append((statement.sql, fresh))
                    name = fresh
                }
            }
            let ok = Self.withEncoded(statement.parameters) { values in
                if let name { return PQsendQueryPrepared(conn, name, Int32(statement.parameters.count), values, nil, nil, 0) }
                return PQsendQueryParams(conn, statement.sql, Int32(statement.parameters.count), nil, values, nil, nil, 0)
            }
            guard ok == 1 else { throw clientError(conn) }
            sent.append((statement.sql, nil))
        }
        guard PQpipelineSync(conn) == 1 else { throw clientError(conn) }
        var results: [QueryResult] = []
        var failure: (any Error)?
        for command in sent {
            // Each command's results end with a null result.
            while let result = PQgetResult(conn) {
                if PQresultStatus(result) == PGRES_PIPELINE_ABORTED {
                    PQclear(result)
                    continue
                }
                do {
                    let consumed = try consume(result, conn: conn)
                    if let name = command.preparing {
                        preparedNames[command.sql] = name  // parsed: named statements outlive a failed transaction
                    } else {
                        results.append(consumed)
                    }
                } catch {
                    failure = failure ?? error
                }
            }
        }
        // The sync point.
        while let result = PQgetResult(conn) {
            let status = PQresultStatus(result)
            PQclear(result)
            if status == PGRES_PIPELINE_SYNC { break }
        }
        if let failure { throw failure }
        if PQstatus(conn) != CONNECTION_OK { throw clientError(conn) }
        return results
    }

    /// Parses and analyses one statement on the server without running it, under `name`
    /// (`PQprepare`: the protocol's Parse message, which takes exactly one statement, so text
    /// such as `1); DROP TABLE t; SELECT (1` is a syntax error rather than three statements).
    /// Throws the server's error for text that does not parse or names what does not exist.
    public func prepare(_ name: String, _ sql: String) throws {
        let conn = try liveHandle()
        _ = try consume(PQprepare(conn, name, sql, 0, nil), conn: conn)
    }

    /// Removes a statement made by `prepare(_:_:)`.
    public func deallocate(_ name: String) throws {
        try execute("DEALLOCATE \(Identifier.quote(name))")
    }

    /// Runs one or more statements separated by semicolons, without parameters (DDL, scripts).
    /// Never pass it text that came from a user: use `query`, which runs exactly one statement.
    public func execute(_ sql: String) throws {
        let conn = try liveHandle()
        _ = try consume(PQexec(conn, sql), conn: conn)
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

    private func liveHandle() throws -> OpaquePointer {
        guard let handle else {
            throw PostgresError(code: .connectionFailure, severity: "CLIENT", message: "the connection is closed")
        }
        return handle
    }

    private func lastErrorMessage(_ conn: OpaquePointer) -> String {
        ConnectionInfo.redact(
            String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines), secrets: secrets)
    }

    private func consume(_ result: OpaquePointer?, conn: OpaquePointer) throws -> QueryResult {
        guard let result else {
            throw clientError(conn)
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return Self.read(result)
        default:
            if let state = field(result, BF_DIAG_SQLSTATE) {
                // A session the server ended (FATAL), or one libpq no longer considers usable, is
                // reported as FATAL whatever the message's own severity: callers reconnect.
                let severity = PQstatus(conn) == CONNECTION_OK ? field(result, BF_DIAG_SEVERITY) ?? "ERROR" : "FATAL"
                throw PostgresError(
                    code: PostgresError.Code(state),
                    severity: severity,
                    message: field(result, BF_DIAG_MESSAGE_PRIMARY) ?? lastErrorMessage(conn),
                    detail: field(result, BF_DIAG_MESSAGE_DETAIL),
                    hint: field(result, BF_DIAG_MESSAGE_HINT))
            }
            throw clientError(conn)
        }
    }

    /// An error libpq raised itself, without a SQLSTATE from the server. When the socket broke
    /// libpq does not always mark the connection bad before it returns, so its wording is checked
    /// too.
    private func clientError(_ conn: OpaquePointer) -> PostgresError {
        let message = lastErrorMessage(conn)
        let lost = PQstatus(conn) != CONNECTION_OK
            || ["server closed the connection", "no connection to the server", "could not receive data",
                "could not send data", "connection not open", "terminating connection"].contains { message.contains($0) }
        return PostgresError(
            code: lost ? .connectionFailure : .clientError, severity: "CLIENT", message: message)
    }

    private func field(_ result: OpaquePointer, _ code: Int32) -> String? {
        PQresultErrorField(result, code).map { String(cString: $0) }
    }

    private static func read(_ result: OpaquePointer) -> QueryResult {
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        var columns: [String] = []
        var types: [UInt32] = []
        var index: [String: Int] = [:]
        for c in 0..<columnCount {
            let name = String(cString: PQfname(result, Int32(c)))
            columns.append(name)
            types.append(UInt32(PQftype(result, Int32(c))))
            if index[name] == nil { index[name] = c }
        }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            var cells: [PostgresCell] = []
            cells.reserveCapacity(columnCount)
            for c in 0..<columnCount {
                let isNull = PQgetisnull(result, Int32(r), Int32(c)) == 1
                let text = isNull ? nil : String(cString: PQgetvalue(result, Int32(r), Int32(c)))
                cells.append(PostgresCell(text: text, typeOID: types[c]))
            }
            rows.append(PostgresRow(index: index, cells: cells))
        }
        let tag = String(cString: PQcmdStatus(result))
        let affected = Int64(String(cString: PQcmdTuples(result))) ?? 0
        return QueryResult(columns: columns, columnTypes: types, rows: rows, affectedRows: affected, commandTag: tag)
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

/// Cancels the statement running on a connection. Safe to use from any thread and from a signal
/// handler's dispatch source: libpq documents `PQcancel` as thread-safe, and the token owns its own
/// `PGcancel` object, independent of the connection's.
public final class CancelToken: @unchecked Sendable {
    private let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { PQfreeCancel(handle) }

    /// Asks the server to cancel the statement in flight. Returns false if the request could not
    /// be sent; a request that arrives when nothing runs does nothing.
    @discardableResult
    public func cancel() -> Bool {
        var buffer = [CChar](repeating: 0, count: 256)
        return PQcancel(handle, &buffer, Int32(buffer.count)) == 1
    }
}
