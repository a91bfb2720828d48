import PostgresClient

/// The job's `cdc` at run time (`docs/cdc.md`): the checks before anything changes, the
/// replication origin each batch session is set up with, and the logical decoding message each
/// batch emits in its own transaction.
///
/// - An origin lives in the session (`pg_replication_origin_session_setup`), and PostgreSQL
///   records it in each commit record: it cannot be set up and reset within one transaction.
///   Through a pooler the session is a server connection that other clients use next, so an
///   origin is refused there (exit 2) instead of leaking to them.
/// - PostgreSQL lets one session at a time use an origin: the first worker session takes the
///   job's name, each further one the first free of `NAME-2`, `NAME-3`…
/// - The message is the first statement of the batch's last round trip, before the batch
///   statement: consumers read it right before the batch's changes, inside the same transaction,
///   and a batch rolled back (a retry, a watchdog cancel, a dry run) takes its message with it.
///   Written before the changes, it cannot know how many rows they are: it carries the keys.
public enum ChangeCapture {
    /// Every message's prefix.
    static let prefix = "backfill"
    /// The message statement; `$1` is the content (`content`).
    static let messageSQL = "SELECT pg_catalog.pg_logical_emit_message(true, '\(prefix)', $1::text)"
    /// The most sessions of one job that use its origin at once (`NAME`, `NAME-2` … `NAME-64`).
    static let maxSessions = 64

    /// One batch's message content, a JSON object with its keys in order: the job, the run, the
    /// worker, the range and the keys it walks (after `lower`, nil at the range's start, up to
    /// and including `upper`; `keys` of them).
    static func content(job: String, run: String, worker: String, range: Int, lower: [String]?, upper: [String], keys: Int) -> String {
        let fields: [(String, RunEvent.Value)] = [
            ("job", .string(job)), ("keys", .int(Int64(keys))), ("lower", lower.map { .strings($0) } ?? .null), ("range", .int(Int64(range))),
            ("run", .string(run)), ("upper", .strings(upper)), ("worker", .string(worker)),
        ]
        return "{" + fields.map { "\(RunEvent.json(.string($0.0))):\(RunEvent.json($0.1))" }.joined(separator: ",") + "}"
    }

    /// The batch's message statement, or none when the job has no `cdc.messages`.
    static func message(_ spec: JobSpec, run: String, worker: String, range: Int, lower: [String]?, upper: [String], keys: Int) -> [Connection.Statement] {
        guard spec.cdc.messages else { return [] }
        return [Connection.Statement(messageSQL, [.text(content(job: spec.name, run: run, worker: worker, range: range, lower: lower, upper: upper, keys: keys))], prepared: true)]
    }

    /// The origin name of a job's `n`-th session at once (1-based).
    static func originName(_ origin: String, session n: Int) -> String { n == 1 ? origin : "\(origin)-\(n)" }

    /// Sets the session up with the job's origin, created when missing: the first of `NAME`,
    /// `NAME-2`… that no other session uses. Returns the name it took.
    static func setUpOrigin(_ origin: String, db: Connection) throws -> String {
        guard db.direct == true else { throw PostgresError(code: .clientError, severity: "CLIENT", message: "cdc.origin: \(poolerProblem)") }
        var session = 1, attempts = 0
        while session <= maxSessions, attempts < 2 * maxSessions {
            attempts += 1
            let name = originName(origin, session: session)
            do {
                try db.query("SELECT pg_catalog.pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = $1)", [.text(name)])
                try db.query("SELECT pg_catalog.pg_replication_origin_session_setup($1)", [.text(name)])
                return name
            } catch let error as PostgresError where error.code == .uniqueViolation {
                continue  // another session created it at the same moment: set it up
            } catch let error as PostgresError where error.code == "55006" {
                session += 1  // another session uses it
            }
        }
        throw PostgresError(code: "55006", severity: "ERROR", message: "cdc.origin: the replication origins \(origin) … \(originName(origin, session: maxSessions)) are all in use by other sessions",
                            hint: "end the sessions that use them (pg_replication_origin_status shows them), or run fewer workers")
    }

    /// What `check` says of the job now, for `backfill plan`: its warnings, or its refusal.
    public static func notes(_ spec: JobSpec, db: Connection) throws -> [String] {
        do {
            return try check(spec, workers: spec.workers, db: db).map { "warning: \($0)" }
        } catch let refusal as JobFileError {
            return ["`run` refuses it (exit 2): \(refusal.problem); fix: \(refusal.fix)"]
        }
    }

    static let poolerProblem = "the connection goes through a pooler (the server's pg_backend_pid() is not the backend the connection was told): a replication origin belongs to the session, and a transaction-mode pooler such as PgBouncer would hand that server connection, origin and all, to other clients, whose changes would then look like the backfill's"

    /// Checks the job's `cdc` before anything is created (exit 2 naming the fix): an origin needs
    /// a direct connection, the privileges to create and set up origins (a superuser has them;
    /// from PostgreSQL 15 they can be granted) and a free origin slot for each of `workers`.
    /// Returns warnings: marks that no logical decoding can read (`wal_level` below `logical`).
    static func check(_ spec: JobSpec, workers: Int, db: Connection) throws -> [String] {
        guard spec.cdc.origin != nil || spec.cdc.messages else { return [] }
        let row = try db.query(
            """
            SELECT current_setting('wal_level') AS wal_level, current_user AS role, r.rolsuper AS superuser,
                   current_setting('server_version_num')::int AS version,
                   has_function_privilege('pg_catalog.pg_replication_origin_session_setup(text)', 'EXECUTE') AS may_set_up,
                   has_function_privilege('pg_catalog.pg_replication_origin_create(text)', 'EXECUTE') AS may_create,
                   coalesce(current_setting('max_active_replication_origins', true), current_setting('max_replication_slots'))::int AS origin_slots,
                   has_table_privilege('pg_catalog.pg_replication_origin_status', 'SELECT') AS reads_status
            FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
            """).first
        let walLevel = row?["wal_level"].string ?? "?"
        var warnings: [String] = []
        if walLevel != "logical" {
            let marks = [spec.cdc.origin.map { "origin `\($0)`" }, spec.cdc.messages ? "messages" : nil].compactMap { $0 }.joined(separator: " and ")
            warnings.append("wal_level is `\(walLevel)`: the batches' \(marks) are written, but no logical decoding can read them; set wal_level = logical (a server restart) for consumers to see them")
        }
        guard let origin = spec.cdc.origin else { return warnings }
        func refuse(_ problem: String, _ fix: String) -> JobFileError {
            JobFileError(file: spec.file, field: "cdc.origin", problem: problem + "; nothing was changed", fix: fix)
        }
        if db.direct == false {
            throw refuse(poolerProblem, "point --database (DATABASE_URL) at the server itself, not at the pooler, for this job; or remove `cdc.origin` and label the changes with `cdc.messages`, which works through a pooler")
        }
        let role = row?["role"].string ?? "ROLE"
        if row?["superuser"].bool != true {
            if (row?["version"].int ?? 0) < 150_000 {
                throw refuse("role \(Identifier.quote(role)) is not a superuser: before PostgreSQL 15 only superusers may use replication origins", "run the job as a superuser, or remove `cdc.origin`")
            }
            if row?["may_set_up"].bool != true || row?["may_create"].bool != true {
                throw refuse(
                    "role \(Identifier.quote(role)) may not use replication origins: EXECUTE on pg_replication_origin_create(text) and pg_replication_origin_session_setup(text) is revoked from PUBLIC",
                    "as a superuser, run `GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_session_setup(text) TO \(Identifier.quote(role));`, or run the job as a superuser, or remove `cdc.origin`")
            }
        }
        let slots = row?["origin_slots"].int ?? 0
        guard row?["reads_status"].bool == true else {
            if slots == 0 { throw refuse("the server has no replication origin slots (max_replication_slots = 0)", "set max_replication_slots to at least \(workers) (a server restart)") }
            return warnings
        }
        // Each origin that has been set up keeps its slot (its progress) until it is dropped; the
        // job's own names reuse theirs.
        let others = try db.query(
            "SELECT count(*)::int AS n FROM pg_catalog.pg_replication_origin_status WHERE external_id <> $1 AND left(external_id, length($1) + 1) <> $1 || '-'",
            [.text(origin)]).first?["n"].int ?? 0
        if slots - others < workers {
            throw refuse(
                "\(workers) worker session\(workers == 1 ? "" : "s") need\(workers == 1 ? "s" : "") as many replication origin slots, and \(max(0, slots - others)) of the server's \(slots) are free (\(others) held by other origins in pg_replication_origin_status)",
                "raise max_replication_slots (max_active_replication_origins from PostgreSQL 18; a server restart), drop origins no longer used (pg_replication_origin_drop), or run fewer workers")
        }
        return warnings
    }
}
