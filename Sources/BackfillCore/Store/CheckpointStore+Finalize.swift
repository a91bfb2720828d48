import Foundation
import PostgresClient

/// The job's finalize steps: which are done (`finalize_steps`), and the `finalizing` state.
extension CheckpointStore {
    /// The finalize steps recorded done for the job: step index → statement hash.
    public func finalizedSteps(_ job: String, db: Connection) throws -> [Int: String] {
        var done: [Int: String] = [:]
        for row in try db.query("SELECT step, statement_hash FROM \(finalizeSteps) WHERE job = $1", [.text(job)]).rows {
            if let step = row["step"].int, let hash = row["statement_hash"].string { done[step] = hash }
        }
        return done
    }

    /// How many of the spec's finalize steps are not recorded done with their current statement.
    public func pendingFinalizeSteps(_ spec: JobSpec, db: Connection) throws -> Int {
        guard !spec.finalize.isEmpty else { return 0 }
        let done = try finalizedSteps(spec.name, db: db)
        return spec.finalize.enumerated().filter { done[$0.offset + 1] != JobSpec.hash($0.element) }.count
    }

    /// The statement that records a finalize step done; it goes out in the step's own transaction,
    /// before its `COMMIT`, so that the record commits with the DDL or not at all.
    func recordStep(_ job: String, step: Int, statement: String, attempts: Int) -> Connection.Statement {
        Connection.Statement(
            """
            INSERT INTO \(finalizeSteps) (job, step, statement_hash, statement, attempts, done_at) VALUES ($1, $2, $3, $4, $5, now())
            ON CONFLICT (job, step) DO UPDATE SET statement_hash = EXCLUDED.statement_hash, statement = EXCLUDED.statement,
                attempts = EXCLUDED.attempts, done_at = EXCLUDED.done_at
            """, [.text(job), .int(Int64(step)), .text(JobSpec.hash(statement)), .text(statement), .int(Int64(attempts))])
    }

    /// Moves the job as `JobLifecycle.decide(step, from:)` says, under the job row's lock:
    /// `finalizing` (clearing `last_error`), or `done` / `failed` with the counters summed from
    /// the ranges. Returns the decision; a refusal changes nothing.
    @discardableResult
    public func apply(_ step: JobLifecycle.RunStep, job: String, error: String? = nil, db: Connection) throws -> JobLifecycle.Decision {
        try db.transaction { db in
            guard let row = try db.query("SELECT state FROM \(jobs) WHERE name = $1 FOR UPDATE", [.text(job)]).first,
                  let state = JobState(rawValue: row["state"].string ?? "")
            else { return .refuse("is not in the store") }
            let decision = JobLifecycle.decide(step, from: state)
            switch decision {
            case .to(.finalizing):
                try db.query("UPDATE \(jobs) SET state = 'finalizing', last_error = NULL, updated_at = now() WHERE name = $1", [.text(job)])
            case .to(let next):
                try finish(job, state: next, error: error, db: db)
            case .remove, .refuse:
                break
            }
            return decision
        }
    }
}
