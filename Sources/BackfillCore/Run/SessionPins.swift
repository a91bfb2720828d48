import PostgresClient

/// What Backfill pins, and where, so that a role's or a database's defaults (`ALTER ROLE … SET`,
/// `ALTER DATABASE … SET`) never change what its statements mean or how long they may run.
/// `docs/guarantees.md` lists every pin with its reason.
///
/// - **Every connection** Backfill opens for itself (`SessionPins.connect`) holds
///   `connection(serverVersion:)` for the session (through a pooler: for each transaction).
/// - **Every transaction** states its isolation level: `BEGIN ISOLATION LEVEL READ COMMITTED`
///   (`Connection.begin`), `… READ ONLY` for the checks that only read. Backfill's exactly-once
///   arguments (the range row lock, `FOR NO KEY UPDATE` re-checking `where`) are READ COMMITTED
///   arguments. The access mode of writes is not overridden: a database whose
///   `default_transaction_read_only` is on is refused before anything is created
///   (`checkWritable`).
/// - **Every batch** sets its own `lock_timeout`, `statement_timeout`, `synchronous_commit`,
///   `idle_in_transaction_session_timeout` and, on 17+, `transaction_timeout` (`Worker`).
/// - **Keys read back as text** are the same whatever the environment: `settings` (`DateStyle`,
///   `IntervalStyle`, float digits) in each transaction that reads or writes checkpointed keys;
///   `client_encoding` is UTF-8 on every connection (`Connection`).
/// - `search_path` is not pinned: the job's own SQL (`where`, `set`, `sql`) is the operator's and
///   is read under the role's path; Backfill's own SQL qualifies every name.
public enum SessionPins {
    static let settings = ["DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'", "extra_float_digits = 3"]

    /// The bound on each of Backfill's own statements outside batches (store writes, claims,
    /// the lease, health readings, the plan's reads, `status`, `wait`): they are small, and an
    /// end check or count that reads a table runs in chunks under the job's
    /// `timeouts.statement_ms` instead.
    static let ownStatementMs = 60_000
    /// How long a store write waits for a lock (a store migration behind another runner's
    /// transaction, a job row under a batch's claim) before failing, instead of forever.
    static let ownLockMs = 5_000
    /// How long one of Backfill's own transactions may sit idle (none does: they are sent whole).
    static let ownIdleInTransactionMs = 60_000

    /// The session settings of every connection Backfill opens for its own use.
    static func connection(serverVersion: Int) -> [(name: String, value: String)] {
        var pins: [(name: String, value: String)] = [
            ("default_transaction_isolation", "read committed"),
            ("statement_timeout", "\(ownStatementMs)ms"),
            ("lock_timeout", "\(ownLockMs)ms"),
            ("idle_in_transaction_session_timeout", "\(ownIdleInTransactionMs)ms"),
        ] + settings.map(pair)
        // Backfill's connections idle between polls and while workers run: a role's
        // idle_session_timeout must not end them (14+); batches bound their own transactions (17+).
        if serverVersion >= 140_000 { pins.append(("idle_session_timeout", "0")) }
        if serverVersion >= 170_000 { pins.append(("transaction_timeout", "0")) }
        return pins
    }

    /// A connection for Backfill's own use, pinned (`connection(serverVersion:)`).
    public static func connect(_ conninfo: String?, applicationName: String?) throws -> Connection {
        let db = try Connection(conninfo, applicationName: applicationName)
        try db.pin(connection(serverVersion: db.serverVersion))
        return db
    }

    /// A read-only transaction's opening words.
    static let readOnly = "ISOLATION LEVEL READ COMMITTED READ ONLY"

    /// Refuses a server where the job's writes cannot commit, before anything is created: a hot
    /// standby, or a database or role whose `default_transaction_read_only` is on (the DBA made
    /// read-only the default; Backfill does not override it).
    static func checkWritable(_ spec: JobSpec, db: Connection) throws {
        let row = try db.query(
            "SELECT pg_is_in_recovery() AS standby, current_setting('default_transaction_read_only') AS read_only, current_user AS role, current_database() AS database").first
        if row?["standby"].bool == true {
            throw JobFileError(
                file: spec.file, field: nil,
                problem: "the server is a hot standby (pg_is_in_recovery() is true): nothing can be written there",
                fix: "point --database (DATABASE_URL) at the primary")
        }
        if row?["read_only"].string == "on" {
            let role = row?["role"].string.map(Identifier.quote) ?? "ROLE"
            let database = row?["database"].string.map(Identifier.quote) ?? "DATABASE"
            throw JobFileError(
                file: spec.file, field: nil,
                problem: "default_transaction_read_only is on for role \(role) in database \(database) (ALTER ROLE … SET or ALTER DATABASE … SET): Backfill does not write where read-only is the default",
                fix: "if writes are meant to be allowed, run `ALTER ROLE \(role) IN DATABASE \(database) SET default_transaction_read_only = off` (or reset the database's setting), then run again")
        }
    }

    /// `SET LOCAL …; SET LOCAL …` for the start of a transaction.
    static var statements: String { settings.map { "SET LOCAL \($0)" }.joined(separator: "; ") }

    /// A setting written `name = value` or `name = 'value'`, as its name and value.
    static func pair(_ setting: String) -> (name: String, value: String) {
        let parts = setting.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        var value = parts.count == 2 ? parts[1] : ""
        if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") { value = String(value.dropFirst().dropLast()) }
        return (parts[0], value)
    }

    /// Settings written `name = value` or `name = 'value'` as one statement that sets them all for
    /// the transaction, as `SET LOCAL` would (`Connection.setLocal`). One statement instead of one
    /// per setting keeps the batch's first round trip short.
    static func setLocal(_ settings: [String]) -> String { Connection.setLocal(settings.map(pair)) }
}
