import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

/// Connects for an admin command; a connection failure is exit 1 with the server's reason.
func connect(_ db: DatabaseOptions, as name: String) throws -> Connection {
    do {
        return try SessionPins.connect(db.conninfo, applicationName: "backfill:\(name)")
    } catch {
        throw CommandFailure(
            message: "\(error)",
            next: "check the server is up and the connection settings (--database, \(Setting.database), DATABASE_URL or libpq's PG* variables)",
            exitCode: 1)
    }
}

/// Loads a job file; an invalid one is exit 2 with the file, field and fix.
func loadSpec(_ path: String) throws -> JobSpec {
    do {
        return try JobSpec.load(path: path)
    } catch {
        throw CommandFailure.invalid("invalid job file: \(error)", next: "fix the job file as the message says, then run again; nothing was changed")
    }
}

/// Plans a job against the database; a missing table, column or index is exit 2.
func planJob(_ spec: JobSpec, _ db: Connection) throws -> JobPlan {
    do {
        return try Planner.plan(spec, on: db)
    } catch let error as JobFileError {
        throw CommandFailure.invalid("invalid: \(error)")
    }
}

/// Prints `value` as one line of JSON: keys sorted, dates in ISO 8601.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .iso8601
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show jobs in the checkpoint store: state, rows done, batches, last key.")
    @Argument(help: "One job's name (default: all jobs).") var job: String?
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    @Option(name: .long, help: "table or json") var format: OutputFormat = .table

    func run() throws {
        if let file = try fleet.load() { return try fleetStatus(job: job, file: file, store: db.store, format: format) }
        let conn = try connect(db, as: "status")
        var jobs = try db.store.status(job: job, db: conn)
        if let job, jobs.isEmpty { throw noSuchJob(job, db) }
        if let job {
            let details = try db.store.details(job: job, db: conn)
            jobs[0].rangeList = details.ranges
            jobs[0].workers = details.workers
        }
        switch format {
        case .json:
            try printJSON(jobs)
        case .table:
            print(StatusTable.render(jobs))
        }
    }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a pending or running job: its runner stops after the batch in flight (exit 3) and `run` refuses until `resume`.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    func run() throws { try apply(.pause, job, db, fleet) }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Allow a paused job to run again; then `backfill run` continues from its checkpoint.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    func run() throws { try apply(.resume, job, db, fleet) }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job that is not done: its runner stops after the batch in flight; it runs again only with --restart.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var fleet: TargetOptions
    func run() throws { try apply(.cancel, job, db, fleet) }
}

struct Forget: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a done, failed or cancelled job's record (its checkpoint and ranges) from the store.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    func run() throws { try apply(.forget, job, db) }
}

struct Unlock: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Free a job whose runner is gone or frozen: terminate its sessions and release its lease.",
        discussion: """
            Refuses (exit 4) while the holder's heartbeat is newer than --stale-after, unless --force. \
            Terminating another role's sessions needs that role or membership in pg_signal_backend; \
            removing the lease row needs DELETE on the store's leases table.
            """)
    @Argument(help: "The job's name.") var job: String
    @OptionGroup var db: DatabaseOptions
    @Option(name: .long, help: "Unlock only when the holder's last heartbeat is at least this old (90s, 10m). Default: 60s.", transform: DurationArgument.init(parsing:))
    var staleAfter: DurationArgument?
    @Flag(name: .long, help: "Unlock even while the holder's heartbeat is fresh (its workers stop after their batch).")
    var force = false

    func run() throws {
        let conn = try connect(db, as: "unlock")
        let staleAfter = staleAfter?.seconds ?? 60
        switch try db.store.unlock(job: job, staleAfter: staleAfter, force: force, db: conn) {
        case .notHeld:
            print("\(job): no runner holds the lease; nothing to unlock")
        case .fresh(let holder):
            throw CommandFailure(
                message: "\(job): the holder is alive (\(holder)); its heartbeat is newer than --stale-after \(self.staleAfter?.description ?? "60s")",
                next: "wait for it, stop it, or use --force to terminate its sessions anyway", exitCode: 4)
        case .released(let holder, let terminated):
            let sessions = terminated.isEmpty ? "no session was left to terminate" : "terminated backend pid \(terminated.map(String.init).joined(separator: ", "))"
            print("\(job): unlocked: \(sessions) and removed the lease (holder was \(holder)); its workers stop before their next batch")
        }
    }
}

func noSuchJob(_ job: String, _ db: DatabaseOptions) -> CommandFailure {
    .invalid("no job named `\(job)` in schema `\(db.schema)`",
             next: "`backfill status` lists the jobs in that schema (--schema or \(Setting.schema) names another)")
}

/// Who runs an operator command, as the store records it: user@host.
var operatorName: String { "\(NSUserName())@\(ProcessInfo.processInfo.hostName)" }

/// Carries out an operator command; a job that does not exist, or a command its state does not
/// allow (`JobLifecycle`), is exit 2 with the reason.
private func apply(_ command: JobCommand, _ job: String, _ db: DatabaseOptions, _ fleet: TargetOptions? = nil) throws {
    if let file = try fleet?.load() { return try applyToTargets(command, job, file, db) }
    let conn = try connect(db, as: "admin")
    let actor = operatorName
    switch try db.store.apply(command, job: job, by: actor, db: conn) {
    case .notFound:
        throw noSuchJob(job, db)
    case .refused(let state, let reason):
        throw CommandFailure.invalid("cannot \(command.rawValue) `\(job)`: it \(reason) (state: \(state.rawValue))",
                                    next: "`backfill status \(job)` shows the job; nothing was changed")
    case .applied(nil):
        print("\(job): forgotten by \(actor)")
    case .applied(let state?):
        print("\(job): \(state == .pending ? "resumed (run it again to continue)" : state.rawValue) by \(actor)")
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Count rows still matching the job's `where`; exit 1 if any remain.")
    @Argument var file: String
    @OptionGroup var db: DatabaseOptions

    func run() throws {
        let spec = try loadSpec(file)
        let conn = try connect(db, as: "verify")
        _ = try planJob(spec, conn)
        guard spec.whereClause != nil else {
            print("\(spec.name): the job has no `where`; nothing to verify")
            return
        }
        let remaining = try Planner.countMatching(spec, on: conn)
        print("\(spec.name): \(remaining) rows still match `where`")
        if remaining > 0 {
            throw CommandFailure(
                message: "\(spec.name): \(remaining) rows still match `where`",
                next: "run the job (`backfill run \(file)`); if it already says done, its `set` leaves rows matching or rows changed behind the checkpoint: run it with --restart",
                exitCode: 1)
        }
    }
}

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a job against the database, print its SQL, EXPLAIN one batch, estimate rows and batches; changes nothing.")
    @Argument var file: String
    @OptionGroup var db: DatabaseOptions

    func run() throws {
        let spec = try loadSpec(file)
        let conn = try connect(db, as: "plan")
        let plan = try planJob(spec, conn)
        let explain = try Planner.explain(plan, size: spec.batch.size, on: conn)
        let requirement = try spec.requires.map { try Requirements.check($0, timeoutMs: spec.timeouts.statementMs, db: conn) }
        print(PlanReport.render(plan, explain: explain, requirement: requirement, budget: try ConnectionBudget.read(conn), cdc: try ChangeCapture.notes(spec, db: conn)))
    }
}
