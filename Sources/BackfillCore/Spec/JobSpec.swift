/// A validated job file: what to change, in which table, walked by which key, and how gently.
///
/// Build one with `JobSpec.parse(yaml:file:)`, which checks everything that can be checked without
/// a database; `Planner` checks the rest against the live catalog.
public struct JobSpec: Sendable, Hashable {
    /// What a batch does to the rows of its key range.
    public enum Action: Sendable, Hashable {
        /// `UPDATE … SET column = expression …`, in the order the file lists them.
        case update([Assignment])
        /// `DELETE` the rows matching `where`.
        case delete
        /// Any statement over the CTE `batch`, which holds the keys of the batch range.
        case sql(String)

        /// The name used in the job file and in output.
        public var name: String {
            switch self {
            case .update: "update"
            case .delete: "delete"
            case .sql: "sql"
            }
        }
    }

    /// One `set` entry: a column and the SQL expression that fills it.
    public struct Assignment: Sendable, Hashable {
        public var column: String
        public var expression: String
        public init(column: String, expression: String) {
            self.column = column
            self.expression = expression
        }
    }

    /// `walk:`: how the table is walked. `key` (the default) walks a unique key's index in key
    /// order; `physical` walks the heap in page order, `ctid` ranges run as TID Range Scans
    /// (PostgreSQL 14+), for tables with no usable unique key or with a random one
    /// (docs/physical-walk.md).
    public enum Walk: String, Sendable, Hashable {
        case key, physical
    }

    /// The pseudo-key of a physical walk: a row version's `ctid`, `(page,line)`. Its ranges run from
    /// `(p,0)` (exclusive: line pointers start at 1) to `(p+k,0)` (inclusive: no row has line 0),
    /// which is pages p … p+k-1, so the key walk's bounds `> last AND <= upper` hold unchanged.
    public static let physicalKey = "ctid"

    /// `batch:`: how many keys a batch walks and how the size adapts.
    public struct Batch: Sendable, Hashable {
        public var size = 1000
        public var min = 100
        public var max = 50_000
        public var targetMs = 50
        /// `batch.max_ms`: the hard ceiling of one batch statement; nil means 4 × `target_ms`. A
        /// batch statement running longer is cancelled (its statement timeout), halved, retried.
        public var maxMs: Int?
        /// The ceiling in force.
        public var ceilingMs: Int { maxMs ?? 4 * targetMs }
        public var pauseMs = 0
        public init() {}
        /// A physical walk's defaults, in heap pages.
        init(size: Int, min: Int, max: Int) {
            (self.size, self.min, self.max) = (size, min, max)
        }
    }

    /// `timeouts:`: applied with `SET LOCAL` in every batch transaction.
    public struct Timeouts: Sendable, Hashable {
        public var lockMs = 100
        public var statementMs = 5000
        public init() {}
    }

    /// `retry:`: how often and how patiently a failed batch is tried again.
    public struct Retry: Sendable, Hashable {
        public var maxAttempts = 8
        public var backoffMs = 100
        public var maxBackoffMs = 10_000
        public var reconnectTimeoutMs = 60_000
        public init() {}
    }

    /// `throttle:`: health signals that slow or pause the job.
    public struct Throttle: Sendable, Hashable {
        public var maxRowsPerSecond = 0
        public var maxReplicationLagMs = 10_000
        public var whenBlocking = true
        /// How long a session may wait on a batch's locks before the job backs off; nil means
        /// `batch.target_ms`.
        public var blockingWaitMs: Int?
        public var checkSQL: String?
        public var pauseDuringAutovacuum = false
        /// Wait while a logical replication slot's consumer has confirmed less than the current
        /// WAL position minus this many MB (`pg_replication_slots`); 0 = off.
        public var maxSlotLagMB = 1024
        /// The slots `maxSlotLagMB` watches; nil = every logical slot of the cluster.
        public var slots: [String]?
        /// The job's WAL budget in MB per second, shared by every worker of every process, from
        /// `pg_current_wal_lsn()` deltas; 0 = off.
        public var maxWalMBPerSecond = 0
        /// Wait while more WAL segments than this wait for the archiver; 0 = off.
        public var maxArchiveBacklog = 0
        /// A configured signal that cannot be read lets the job run (the old behaviour) instead of
        /// making it wait with the reason and the fix.
        public var failOpen = false
        public init() {}
    }

    /// `on_error:`: what a batch that fails with a data error (SQLSTATE class 22, data exception,
    /// or 23, integrity constraint violation) does to the job.
    public struct OnError: Sendable, Hashable {
        public enum Action: String, Sendable, Hashable, CaseIterable {
            /// Stop the job at the first bad row, naming its key (nothing more is committed).
            case stop
            /// Isolate the bad rows by bisecting the batch's key range, quarantine them in the
            /// store's `bad_rows` table, and write every other row.
            case skip
        }
        public var action = Action.stop
        /// With `skip`: one bad row more than this many stops the job (exit 1).
        public var maxRows = 1000
        /// With `skip`: a job that finishes with bad rows exits 0 instead of 1.
        public var exitZero = false
        public init() {}
    }

    /// `cdc:`: how change-data-capture consumers tell the job's changes from the application's
    /// (`docs/cdc.md`). Both off by default.
    public struct CDC: Sendable, Hashable {
        /// `cdc.origin`: every batch session is set up with this replication origin
        /// (`pg_replication_origin_session_setup`), so that every change it commits carries it;
        /// nil = off.
        public var origin: String?
        /// `cdc.messages`: one transactional logical decoding message (prefix `backfill`) in each
        /// batch's transaction, before its changes.
        public var messages = false
        public init() {}

        /// An origin name: 1 to 50 ASCII letters, digits, `-`, `_` or `.`, starting with a letter
        /// or digit; not `pg_…`, `none` or `any` (PostgreSQL reserves them for its subscriptions).
        /// 50, not 63: a session beyond the first uses the name with `-2`, `-3`… after it.
        public static func isValidOrigin(_ name: String) -> Bool {
            let lower = name.lowercased()
            return name.count <= 50 && name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
                && (name.first?.isLetter == true || name.first?.isNumber == true)
                && !lower.hasPrefix("pg_") && lower != "none" && lower != "any"
        }
    }

    /// Unique job name; names the checkpoint and the lease.
    public var name: String
    /// The table as written in the file (`public.accounts`).
    public var table: String
    /// The table's name parts as PostgreSQL reads them (`["public", "accounts"]`).
    public var tableParts: [String]
    /// The key columns, in index order; `[ctid]` for a physical walk.
    public var key: [String]
    public var walk = Walk.key
    /// The optional predicate selecting rows that still need work.
    public var whereClause: String?
    public var action: Action
    public var batch = Batch()
    public var timeouts = Timeouts()
    public var retry = Retry()
    public var throttle = Throttle()
    public var onError = OnError()
    /// `cdc`: not part of the fingerprint (it changes how the changes are labelled, not what rows get).
    public var cdc = CDC()
    public var workers = 1
    /// `repeat`: each run after a finished pass starts a new pass (a nightly purge); rows that
    /// match `where` behind the walk are the next pass's work, not a failure.
    public var repeats = false
    /// `journal`: every batch also records, in its own statement, each changed row's key with
    /// the old and new values of the `set` columns (the whole row for `action: delete`), so that
    /// `backfill revert` can put them back (docs/journal.md). Off by default.
    public var journal = false
    /// `catch_up_passes`: when every key is walked but rows still match `where` (they changed
    /// behind the walk), walk again this many times before failing.
    public var catchUpPasses = 3
    /// `requires`: a boolean SQL expression or one-value query that must be true before the first
    /// batch (read-only, under `timeouts.statement_ms`); nil when the job has none.
    public var requires: String?
    /// `finalize`: SQL statements run once, in order, after the job is done and verified, each
    /// in its own transaction under `timeouts.lock_ms` and the job's retry policy.
    public var finalize: [String] = []
    /// The file the spec came from, for messages.
    public var file: String

    public init(name: String, table: String, key: [String], whereClause: String? = nil, action: Action, file: String = "(inline)") {
        self.name = name
        self.table = table
        self.tableParts = Identifier.parseQualified(table) ?? [table]
        self.key = key
        self.whereClause = whereClause
        self.action = action
        self.file = file
    }

    /// A fingerprint of everything that decides what rows get: table, key, where, action and its
    /// SQL. A checkpoint made under another fingerprint is not resumed without `--restart`.
    /// `on_error` is not part of it: it decides whether the job goes on past a row that cannot be
    /// written, never what a written row gets, so a job that stopped at a bad row can be rerun
    /// with `on_error: {action: skip}` from its checkpoint.
    public var fingerprint: String {
        var parts = ["table=\(tableParts.joined(separator: "."))", "key=\(walk == .physical ? "walk=physical" : key.joined(separator: ","))",
                     "where=\(whereClause ?? "")", "action=\(action.name)"]
        switch action {
        case .update(let assignments): parts += assignments.map { "set \($0.column)=\($0.expression)" }
        case .sql(let sql): parts.append("sql=\(sql)")
        case .delete: break
        }
        // Only when on, so that the fingerprints of jobs without a journal stay what they were.
        if journal { parts.append("journal=true") }
        return Self.hash(parts.joined(separator: "\u{1F}"))
    }

    /// A job's name: 1 to 63 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or
    /// digit (the job file's `name`, and what `wait` accepts).
    public static func isValidName(_ name: String) -> Bool {
        name.count <= 63 && name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            && (name.first?.isLetter == true || name.first?.isNumber == true)
    }

    /// How to write a valid name, for the messages that refuse one.
    public static let nameRule = "use 1 to 63 letters, digits, `-`, `_` or `.`, starting with a letter or digit"

    /// 64 bits of FNV-1a over the text's UTF-8, as 16 hex digits: the spec's fingerprint and a
    /// finalize step's statement hash.
    public static func hash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

import PostgresClient
