import Foundation
import PostgresClient

/// The store's schema: its tables, its recorded version, and the migrations that bring an older
/// store up to date.
extension CheckpointStore {
    /// The DDL of the current schema version; every statement is safe to run again.
    var migrations: String {
        """
        CREATE TABLE IF NOT EXISTS \(jobs) (
            name text PRIMARY KEY,
            spec_hash text NOT NULL,
            table_name text NOT NULL,
            state text NOT NULL DEFAULT 'pending',
            rows_done bigint NOT NULL DEFAULT 0,
            batches bigint NOT NULL DEFAULT 0,
            last_key jsonb,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS runner text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS paused_by text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS paused_at timestamptz;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS throttle_reason text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS throttled_since timestamptz;
        CREATE TABLE IF NOT EXISTS \(ranges) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            range_id integer NOT NULL,
            lower_key jsonb,
            upper_key jsonb,
            last_key jsonb,
            done boolean NOT NULL DEFAULT false,
            rows_done bigint NOT NULL DEFAULT 0,
            batches bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, range_id)
        );
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS estimated_rows bigint;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS worker text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS bucket_tokens float8;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS bucket_at timestamptz;
        CREATE TABLE IF NOT EXISTS \(workers) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            worker text NOT NULL,
            range_id integer,
            rows_done bigint NOT NULL DEFAULT 0,
            rows_per_second float8 NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, worker)
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS pass integer NOT NULL DEFAULT 1;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS keys_walked bigint NOT NULL DEFAULT 0;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS last_batch_outside bigint NOT NULL DEFAULT 0;
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ranges_batch_within_range' AND conrelid = '\(ranges.replacingOccurrences(of: "'", with: "''"))'::regclass) THEN
                ALTER TABLE \(ranges) ADD CONSTRAINT ranges_batch_within_range CHECK (last_batch_outside = 0);
            END IF;
        END $$;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS last_batch_still_matching bigint NOT NULL DEFAULT 0;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS walk text NOT NULL DEFAULT 'key';
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS relation text;
        ALTER TABLE \(ranges) ADD COLUMN IF NOT EXISTS catch_up boolean NOT NULL DEFAULT false;
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ranges_batch_leaves_where_false' AND conrelid = '\(ranges.replacingOccurrences(of: "'", with: "''"))'::regclass) THEN
                ALTER TABLE \(ranges) ADD CONSTRAINT ranges_batch_leaves_where_false CHECK (last_batch_still_matching = 0);
            END IF;
        END $$;
        CREATE TABLE IF NOT EXISTS \(leases) (
            job text PRIMARY KEY,
            token text NOT NULL,
            runner text NOT NULL,
            direct boolean NOT NULL,
            lock_key bigint NOT NULL,
            backend_pid integer,
            application_name text,
            client text,
            acquired_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS throttle_detail text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS wal_tokens float8;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS wal_lsn bigint;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS wal_at float8;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS run_started_at timestamptz;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS run_keys_before bigint;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS run_throttled_seconds float8 NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS \(badRowsTable) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            key jsonb NOT NULL,
            pass integer NOT NULL,
            range_id integer NOT NULL,
            sqlstate text NOT NULL,
            message text NOT NULL,
            detail text,
            worker text,
            detected_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, key)
        );
        CREATE TABLE IF NOT EXISTS \(finalizeSteps) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            step integer NOT NULL,
            statement_hash text NOT NULL,
            statement text NOT NULL,
            attempts integer NOT NULL DEFAULT 1,
            done_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, step)
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_max_rows_per_second integer;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_target_ms integer;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_pause_ms integer;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_workers integer;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_by text;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS tuned_at timestamptz;
        CREATE TABLE IF NOT EXISTS \(journalTable) (
            seq bigint GENERATED ALWAYS AS IDENTITY,
            job text COLLATE "C" NOT NULL,
            pass integer NOT NULL,
            key jsonb NOT NULL,
            old jsonb,
            new jsonb,
            PRIMARY KEY (job, seq)
        );
        CREATE TABLE IF NOT EXISTS \(revertConflicts) (
            job text NOT NULL REFERENCES \(jobs) (name) ON DELETE CASCADE,
            pass integer NOT NULL,
            key jsonb NOT NULL,
            detected_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, pass, key)
        );
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS revert_last bigint;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS revert_restored bigint NOT NULL DEFAULT 0;
        ALTER TABLE \(jobs) ADD COLUMN IF NOT EXISTS revert_conflicts bigint NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS \(Identifier.quote(schema)).store_version (version integer NOT NULL);
        DELETE FROM \(Identifier.quote(schema)).store_version;
        INSERT INTO \(Identifier.quote(schema)).store_version VALUES (\(Self.version));
        """
    }

    /// The store's schema version; `migrate` changes tables only when the stored one is older.
    static let version = 11

    /// The version recorded in the store, or nil when it has none (no store, or one made before
    /// versions were recorded).
    func storedVersion(_ db: Connection) throws -> Int? {
        guard try db.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text("\(Identifier.quote(schema)).store_version")]).first?["present"].bool == true
        else { return nil }
        return try db.query("SELECT max(version) AS v FROM \(Identifier.quote(schema)).store_version").first?["v"].int
    }

    /// Creates or upgrades the store's tables, only when its recorded version is older than this
    /// build's (a newer store, upgraded by a newer binary, is left as it is: versions only add): a store that is up to date costs one catalog query and takes no lock. Upgrades
    /// run under an advisory lock and `lock_timeout`, create the schema only when it does not
    /// exist (a role that owns an existing schema needs no CREATE on the database), and refuse a
    /// schema that holds tables Backfill did not create.
    public func migrate(_ db: Connection) throws {
        if let stored = try storedVersion(db), stored >= Self.version { return }
        try db.transaction { db in
            try db.execute("SET LOCAL lock_timeout = '5s'")
            try db.query("SELECT pg_advisory_xact_lock(hashtext($1))", [.text("backfill-store:" + schema)])
            if let stored = try storedVersion(db), stored >= Self.version { return }
            let found = try db.query(
                """
                SELECT to_regnamespace($1) IS NOT NULL AS schema_exists,
                       to_regclass($2) IS NOT NULL AS has_jobs,
                       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))::int AS relations
                """, [.text(Identifier.quote(schema)), .text(jobs)]).first
            if found?["schema_exists"].bool == true, found?["has_jobs"].bool == false, (found?["relations"].int ?? 0) > 0 {
                throw JobFileError(
                    file: "--schema", field: nil,
                    problem: "schema `\(schema)` holds tables that Backfill did not create",
                    fix: "give Backfill a schema of its own with `--schema NAME` (it creates its tables there), or create an empty one: `CREATE SCHEMA \(Identifier.quote(schema)) AUTHORIZATION <role>`")
            }
            try checkCreatePrivilege(schemaExists: found?["schema_exists"].bool == true, hasTables: found?["has_jobs"].bool == true, db: db)
            if found?["schema_exists"].bool != true { try db.execute("CREATE SCHEMA \(Identifier.quote(schema))") }
            try db.execute(migrations)
        }
    }

    /// Creating or upgrading the store needs CREATE on the database (no schema yet), CREATE on
    /// the schema (no tables yet), or ownership of the tables (an upgrade); without it, exit 2
    /// naming the privilege and the GRANT, before anything changes.
    private func checkCreatePrivilege(schemaExists: Bool, hasTables: Bool, db: Connection) throws {
        let row = try db.query(
            """
            SELECT current_user AS role, current_database() AS db,
                   has_database_privilege(current_database(), 'CREATE') AS on_database,
                   CASE WHEN to_regnamespace($1) IS NULL THEN false ELSE has_schema_privilege(to_regnamespace($1), 'CREATE') END AS on_schema,
                   CASE WHEN to_regclass($2) IS NULL THEN false ELSE pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass($2)), 'USAGE') END AS owns_tables
            """, [.text(Identifier.quote(schema)), .text(jobs)]).first
        let role = row?["role"].string ?? "the role"
        let (ok, grant): (Bool, String) =
            !schemaExists ? (row?["on_database"].bool == true, "GRANT CREATE ON DATABASE \(Identifier.quote(row?["db"].string ?? "")) TO \(Identifier.quote(role)), or create the schema for it: CREATE SCHEMA \(Identifier.quote(schema)) AUTHORIZATION \(Identifier.quote(role))")
            : !hasTables ? (row?["on_schema"].bool == true, "GRANT CREATE ON SCHEMA \(Identifier.quote(schema)) TO \(Identifier.quote(role))")
            : (row?["owns_tables"].bool == true, "run this version of backfill once as the role that owns the store's tables, which upgrades them")
        guard !ok else { return }
        throw JobFileError(
            file: "--schema", field: nil,
            problem: "role \(role) cannot \(hasTables ? "upgrade" : "create") the checkpoint store in schema `\(schema)`",
            fix: grant)
    }
}
