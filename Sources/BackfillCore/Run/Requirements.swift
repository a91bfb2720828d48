import Foundation
import PostgresClient

/// The job's `requires`: a boolean expression or one-value query that must be true before the
/// run touches anything (the store included). Read-only, under `timeouts.statement_ms`, as one
/// statement of the extended protocol.
public enum Requirements {
    /// One reading: whether it holds, and what it said for people.
    public static func check(_ sql: String, timeoutMs: Int, db: Connection) throws -> (met: Bool, detail: String) {
        do {
            let ok: Bool? = try Planner.inReadOnlyTransaction(settings: ["statement_timeout = '\(timeoutMs)ms'"], on: db) {
                try db.query("SELECT (\(sql))::boolean AS ok").first?["ok"].bool
            }
            return (ok == true, "`requires` returned \(ok.map { String($0) } ?? "NULL")")
        } catch let error as PostgresError where !error.isConnectionLost {
            // A table the migration has not created yet, a permission, a timeout: not met.
            return (false, "`requires` failed: SQLSTATE \(error.code.raw) \(error.message)")
        }
    }

    /// Checks the requirement; with `wait` seconds, re-checks every second until it holds or the
    /// time is up, with a `requirements` event when it starts waiting (and when what it sees
    /// changes) and one when it is met. Returns a stop when a signal arrives; throws
    /// `JobFileError` (exit 2) when it does not hold.
    static func await(_ context: RunContext, db: Connection) throws -> RunOutcome? {
        guard let sql = context.spec.requires else { return nil }
        let spec = context.spec
        let began = ContinuousClock.now
        var (met, detail) = try check(sql, timeoutMs: spec.timeouts.statementMs, db: db)
        var shown: String?
        while !met {
            let waited = (ContinuousClock.now - began).seconds
            guard let limit = context.options.waitForRequirements, waited < limit else {
                let after = context.options.waitForRequirements == nil ? "" : " after waiting \(Int(waited.rounded())) s"
                throw JobFileError(
                    file: spec.file, field: "requires",
                    problem: "the job's requirement does not hold\(after): \(detail); nothing was changed (requires: \(sql))",
                    fix: context.options.waitForRequirements == nil
                        ? "deploy what it waits for first (the migration), or let the run wait for it: `run --wait-for-requirements 10m`"
                        : "check that what it waits for is deployed, or wait longer (--wait-for-requirements)")
            }
            if shown != detail {
                context.emit(.requirements(.init(requires: sql, state: .waiting(detail: detail, timeout: .milliseconds(Int64(limit * 1000))))))
                shown = detail
            }
            context.sleep(ms: 1000)
            if context.stop.isRequested { return .stopped(.signal, context.summary(state: .pending)) }
            (met, detail) = try check(sql, timeoutMs: spec.timeouts.statementMs, db: db)
        }
        context.emit(.requirements(.init(requires: sql, state: .met(waited: ContinuousClock.now - began))))
        return nil
    }
}
