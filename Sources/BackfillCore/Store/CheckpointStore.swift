import Foundation
import PostgresClient

/// The checkpoint store: a schema of its own (default `backfill`) with a jobs table, a ranges
/// table and a workers table. Its concerns live in extensions: `+Schema` (tables, version,
/// migrations), `+Jobs` (the job record and its lifecycle), `+Ranges` (claims, checkpoints and
/// splits), `+Rate` (the job-wide rate budget), `+BadRows` (quarantined rows), `+Heartbeats` and
/// `+Status`.
public struct CheckpointStore: Sendable {
    /// The schema's name, unquoted.
    public let schema: String
    var jobs: String { "\(Identifier.quote(schema)).jobs" }
    var ranges: String { "\(Identifier.quote(schema)).ranges" }
    var workers: String { "\(Identifier.quote(schema)).workers" }
    var leases: String { "\(Identifier.quote(schema)).leases" }
    /// Rows that could not be written, quarantined by `on_error: skip` (`+BadRows`).
    public var badRowsTable: String { "\(Identifier.quote(schema)).bad_rows" }
    /// What the batches of a job with `journal: true` replaced (`+Journal`). No foreign key to
    /// `jobs`: a per-row check would cost every journaled row a lookup; `forget` and `--restart`
    /// delete a job's journal themselves.
    public var journalTable: String { "\(Identifier.quote(schema)).journal" }
    /// Journaled rows a revert left because the application changed them since (`+Journal`).
    var revertConflicts: String { "\(Identifier.quote(schema)).revert_conflicts" }
    var finalizeSteps: String { "\(Identifier.quote(schema)).finalize_steps" }
    /// Set for a run's own store: what its claims check (spec hash, lease token).
    var leaseWatch: LeaseWatch?

    public init(schema: String = "backfill") { self.schema = schema }

    /// A key as the store keeps it: a JSON array of the key columns' text forms.
    static func encodeKey(_ key: [String]) -> String {
        String(decoding: try! JSONEncoder().encode(key), as: UTF8.self)
    }

    static func decodeKey(_ json: String) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(json.utf8))
    }
}
