import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

/// Connects for an admin command; a connection failure is exit 1 with the server's reason.
func connect(_ db: DatabaseOptions, as name: String) throws -> Connection {
    do {
        return try Connection(db.conninfo, applicationName: "backfill:\(name)")
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

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show jobs in the checkpoint store: state, rows done, batches, last key.")
    @Argument(help: "One job's name (default: all jobs).") var job: String?
    @OptionGroup var db: DatabaseOptions
    @Option(name: .long, help: "table or json") var format: OutputFormat = .table

    func run() throws {
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
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(jobs), as: UTF8.self))
        case .table:
            print(StatusTable.render(jobs))
        }
    }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a job: its runner stops after the batch in flight (exit 3) and `run` refuses until `resume`.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    func run() throws { try setState(job, .paused, db) }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Allow a paused job to run again; then `backfill run` continues from its checkpoint.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    func run() throws { try setState(job, .pending, db) }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job: its runner stops after the batch in flight; it runs again only with --restart.")
    @Argument var job: String
    @OptionGroup var db: DatabaseOptions
    func run() throws { try setState(job, .cancelled, db) }
}

private func noSuchJob(_ job: String, _ db: DatabaseOptions) -> CommandFailure {
    .invalid("no job named `\(job)` in schema `\(db.schema)`",
             next: "`backfill status` lists the jobs in that schema (--schema or \(Setting.schema) names another)")
}

private func setState(_ job: String, _ state: JobState, _ db: DatabaseOptions) throws {
    let conn = try connect(db, as: "admin")
    let actor = "\(NSUserName())@\(ProcessInfo.processInfo.hostName)"
    guard try db.store.setState(job, to: state, by: actor, db: conn) else { throw noSuchJob(job, db) }
    print("\(job): \(state == .pending ? "resumed (run it again to continue)" : state.rawValue) by \(actor)")
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
        print(PlanReport.render(plan, explain: explain))
    }
}
