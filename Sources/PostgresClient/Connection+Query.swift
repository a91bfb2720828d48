import CLibPQ
import Foundation

/// Running one statement, or a script, and reading its result.
extension Connection {
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
                var pipeline = Pipeline(beginStatements())
                let statement = pipeline.append(Statement(sql, parameters, prepared: prepared))
                pipeline.append(Statement("COMMIT"))
                return try run(pipeline)[statement]
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

    /// Runs `sql` with its values (every slot bound), as `query(_:_:prepared:)`.
    @discardableResult
    public func query(_ sql: SQL, prepared: Bool = false) throws -> QueryResult {
        try query(sql.text, sql.values, prepared: prepared)
    }

    /// Runs one statement of a pipeline on its own.
    @discardableResult
    public func query(_ statement: Statement) throws -> QueryResult {
        try query(statement.sql, statement.parameters, prepared: statement.prepared)
    }

    /// Parameters as the C strings libpq takes (text format), for the duration of `body`.
    static func withEncoded<T>(_ parameters: [PostgresValue], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> T) -> T {
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

        /// The text and the values of `sql`, every slot bound.
        public init(_ sql: SQL, prepared: Bool = false) {
            self.init(sql.text, sql.values, prepared: prepared)
        }
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

    func consume(_ result: OpaquePointer?, conn: OpaquePointer) throws -> QueryResult {
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

    private func field(_ result: OpaquePointer, _ code: Int32) -> String? {
        PQresultErrorField(result, code).map { String(cString: $0) }
    }

    static func read(_ result: OpaquePointer) -> QueryResult {
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
