import PostgresClient

/// The connections a run needs, against the slots the server leaves the role. A run holds one
/// connection per worker, the coordinator's (which the end check borrows while the workers run),
/// the lease's (unless `--join`), and the watchdog's (with `throttle.when_blocking`, opened the
/// first time a batch runs long enough to matter). Pure, apart from `read`.
public struct ConnectionBudget: Sendable, Hashable {
    /// Slots still free for this role in this database when the run starts (its own coordinator
    /// and lease already counted), and the limit that leaves the fewest; nil free: no limit
    /// applies that Backfill can read (through a pooler, the pooler's own limits apply).
    public var free: Int?
    public var limit: String

    public init(free: Int?, limit: String) {
        self.free = free
        self.limit = limit
    }

    /// What the run does about a fit, in a line.
    public func message(_ fit: Fit, workers: Int, lease: Bool, watchdog: Bool) -> String {
        let needed = Self.needed(workers: workers, lease: lease, watchdog: watchdog)
        switch fit {
        case .all:
            return "the run needs \(needed) connections, and they are free"
        case .reduced(let fewer, let keepsWatchdog):
            return "the run needs \(needed) connections (\(workers) worker\(workers == 1 ? "" : "s"), the coordinator\(lease ? ", the lease" : "")\(watchdog ? ", the watchdog" : "")) and \(limit), leaving \(free ?? 0) free: \(fewer) of \(workers) workers run"
                + (watchdog && !keepsWatchdog ? ", and the watchdog is off (batch.max_ms still bounds every batch)" : "")
        case .none:
            return "the run needs at least \(Self.needed(workers: 1, lease: lease, watchdog: false)) connections and \(limit), leaving \(free ?? 0) free"
        }
    }

    /// The `connections` event for a fit.
    public func event(_ fit: Fit, workers: Int, lease: Bool, watchdog: Bool) -> RunEvent.Connections {
        var fewer: (workers: Int, watchdog: Bool)?
        if case .reduced(let workers, let keepsWatchdog) = fit { fewer = (workers, keepsWatchdog) }
        return RunEvent.Connections(
            state: .reduced(needed: Self.needed(workers: workers, lease: lease, watchdog: watchdog), free: free ?? 0, limit: limit,
                            workers: fewer?.workers, watchdog: fewer?.watchdog),
            message: message(fit, workers: workers, lease: lease, watchdog: watchdog))
    }

    /// Connections of a run: `workers` + coordinator + lease + watchdog.
    public static func needed(workers: Int, lease: Bool, watchdog: Bool) -> Int {
        workers + 1 + (lease ? 1 : 0) + (watchdog ? 1 : 0)
    }

    /// What fits: every worker; fewer workers; one worker without the watchdog (whose
    /// connection is the last to give up, as `batch.max_ms` still bounds every batch); or nothing.
    public enum Fit: Sendable, Hashable {
        case all
        case reduced(workers: Int, watchdog: Bool)
        case none
    }

    /// The fit of `workers` (and a watchdog, when the job has one; and the lease, when it is not
    /// taken yet) into the free slots.
    public func fit(workers: Int, watchdog: Bool, lease: Bool = false) -> Fit {
        guard var free else { return .all }
        if lease { free -= 1 }
        let extra = workers + (watchdog ? 1 : 0)
        if free >= extra { return .all }
        let withWatchdog = free - (watchdog ? 1 : 0)
        if withWatchdog >= 1 { return .reduced(workers: withWatchdog, watchdog: watchdog) }
        if free >= 1 { return .reduced(workers: 1, watchdog: false) }
        return .none
    }

    /// The free slots as the server counts them: the role's `CONNECTION LIMIT`, the database's,
    /// and `max_connections` less the slots reserved for superusers (whom neither connection
    /// limit binds). Nil `free` when none is set, or through a pooler.
    public static func read(_ db: Connection) throws -> ConnectionBudget {
        guard db.direct != false else { return ConnectionBudget(free: nil, limit: "the pooler's") }
        guard let row = try db.query("""
            SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolconnlimit AS role_limit, d.datname AS database, d.datconnlimit AS database_limit,
                   (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname AND a.backend_type = 'client backend')::int AS role_used,
                   (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.backend_type = 'client backend')::int AS database_used,
                   current_setting('max_connections')::int AS max_connections,
                   current_setting('superuser_reserved_connections')::int AS reserved,
                   (SELECT count(*) FROM pg_stat_activity a WHERE a.backend_type = 'client backend')::int AS server_used
            FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
            """).first else { return ConnectionBudget(free: nil, limit: "none") }
        let superuser = row["superuser"].bool == true
        var candidates: [(free: Int, limit: String)] = []
        let role = Identifier.quote(row["role"].string ?? "")
        let database = Identifier.quote(row["database"].string ?? "")
        if !superuser, let limit = row["role_limit"].int, limit >= 0 {
            candidates.append((limit - (row["role_used"].int ?? 0), "role \(role) has CONNECTION LIMIT \(limit)"))
        }
        if !superuser, let limit = row["database_limit"].int, limit >= 0 {
            candidates.append((limit - (row["database_used"].int ?? 0), "database \(database) has CONNECTION LIMIT \(limit)"))
        }
        if let max = row["max_connections"].int {
            let usable = max - (superuser ? 0 : row["reserved"].int ?? 0)
            candidates.append((usable - (row["server_used"].int ?? 0), "the server's max_connections is \(max)" + (superuser ? "" : " (\(row["reserved"].int ?? 0) reserved for superusers)")))
        }
        guard let tightest = candidates.min(by: { $0.free < $1.free }) else { return ConnectionBudget(free: nil, limit: "none") }
        return ConnectionBudget(free: Swift.max(0, tightest.free), limit: tightest.limit)
    }
}
