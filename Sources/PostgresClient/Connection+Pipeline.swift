import CLibPQ
import Foundation

/// Many statements in one round trip.
extension Connection {
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

    /// Runs `pipeline` (`pipeline(_:)`, one round trip); its handles read the results.
    public func run(_ pipeline: Pipeline) throws -> Pipeline.Results {
        Pipeline.Results(try self.pipeline(pipeline.statements))
    }
}

/// Statements sent together in one round trip (`Connection.run(_:)`), with a handle to each one
/// whose result the caller reads:
///
/// ```swift
/// var pipeline = Pipeline(db.beginStatements())
/// let claim = pipeline.append(claimStatement)
/// let row = try db.run(pipeline)[claim].first
/// ```
public struct Pipeline: Sendable {
    /// Where a statement's result is among the pipeline's results.
    public struct Handle: Sendable, Hashable {
        fileprivate let index: Int
    }

    /// The results of a pipeline that ran, read by the handles of its statements.
    public struct Results: Sendable {
        fileprivate let results: [QueryResult]

        fileprivate init(_ results: [QueryResult]) { self.results = results }

        public subscript(_ handle: Handle) -> QueryResult {
            precondition(handle.index < results.count, "a handle of another pipeline")
            return results[handle.index]
        }
    }

    /// The statements, in the order they are sent.
    public private(set) var statements: [Connection.Statement]

    public init(_ statements: [Connection.Statement] = []) {
        self.statements = statements
    }

    /// Appends a statement; its handle reads its result.
    @discardableResult
    public mutating func append(_ statement: Connection.Statement) -> Handle {
        statements.append(statement)
        return Handle(index: statements.count - 1)
    }

    /// Appends statements whose results nobody reads.
    public mutating func append(contentsOf statements: [Connection.Statement]) {
        self.statements += statements
    }
}
