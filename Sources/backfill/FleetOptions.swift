import ArgumentParser
import BackfillCore
import Foundation
import PostgresClient

/// `--targets`, `--target` and `--target-index`: a job across a fleet of databases
/// (docs/fleet.md). With `--targets`, each target's `database` stands in for `--database`.
struct TargetOptions: ParsableArguments {
    @Option(name: .long, help: "A targets file (YAML) listing the databases to reach instead of --database: shards, tenants, regions (docs/fleet.md). Env: \(Setting.targets).")
    var targets: String?

    @Option(name: .customLong("target"), help: "Only this target of --targets (repeatable).")
    var only: [String] = []

    @Option(name: .long, help: "Only the N-th target of --targets, from 0 (a Kubernetes Indexed Job passes $JOB_COMPLETION_INDEX). Env: \(Setting.targetIndex).")
    var targetIndex: Int?

    mutating func validate() throws {
        try Setting.targets.fill(&targets) { $0 }
        let indexSource = try Setting.targetIndex.fill(&targetIndex)
        if targets == nil, !only.isEmpty || targetIndex != nil {
            throw ValidationError("--target and --target-index choose targets of a targets file: give it with --targets")
        }
        if !only.isEmpty, targetIndex != nil { throw ValidationError("--target and --target-index cannot be combined: use one of them") }
        if let targetIndex, targetIndex < 0 { throw ValidationError("\(indexSource) must be 0 or more (targets are counted from 0, like JOB_COMPLETION_INDEX)") }
    }

    /// The targets file, checked and with the selection applied; nil without `--targets`. An
    /// invalid one is exit 2 naming the file, the field and the fix.
    func load() throws -> TargetsFile? {
        guard let targets else { return nil }
        do {
            return try TargetsFile.load(path: targets, selection: TargetSelection(names: only, index: targetIndex))
        } catch {
            throw CommandFailure.invalid("invalid targets file: \(error)", next: "fix the targets file (or the environment) as the message says, then run again; nothing was changed")
        }
    }
}

/// A connection for an admin command to one target; a server that does not answer in 5 s
/// (`PGCONNECT_TIMEOUT`, unless set) is reported, not waited for.
func connect(_ target: FleetTarget, as name: String) throws -> Connection {
    setenv("PGCONNECT_TIMEOUT", "5", 0)
    return try SessionPins.connect(target.database, applicationName: "backfill:\(name)")
}

/// `status JOB --targets`: one row per target and the total; a target that cannot be reached is
/// a row saying so, and the command still exits 0.
func fleetStatus(job: String?, file: TargetsFile, store: CheckpointStore, format: OutputFormat) throws {
    guard let job else {
        throw CommandFailure.invalid("status --targets needs the job's name", next: "run `backfill status JOB --targets \(file.file)`")
    }
    let status = FleetStatus.read(job: job, targets: file.targets, store: store) { try connect($0, as: "status") }
    switch format {
    case .json: try printJSON(status)
    case .table: print(status.render())
    }
}

/// `pause`/`resume`/`cancel JOB --targets`: the command on every selected target. Each target's
/// result is printed; the exit code is the first target's that did not take it (2 no such job or
/// a state that refuses it, 1 unreachable), in file order.
func applyToTargets(_ command: JobCommand, _ job: String, _ file: TargetsFile, _ db: DatabaseOptions) throws {
    let actor = operatorName
    var failures: [(String, CommandFailure)] = []
    for target in file.targets {
        do {
            let conn = try connect(target, as: "admin")
            switch try db.store.apply(command, job: job, by: actor, db: conn) {
            case .notFound:
                throw CommandFailure.invalid("no job named `\(job)` in schema `\(db.schema)`")
            case .refused(let state, let reason):
                throw CommandFailure.invalid("cannot \(command.rawValue) `\(job)`: it \(reason) (state: \(state.rawValue))")
            case .applied(let state):
                print("\(job) [\(target.name)]: \(state.map { $0 == .pending ? "resumed (run it again to continue)" : $0.rawValue } ?? "forgotten") by \(actor)")
            }
        } catch let failure as CommandFailure {
            failures.append((target.name, failure))
        } catch {
            failures.append((target.name, CommandFailure(message: ConnectionInfo.redact("\(error)", secrets: [target.database]), next: "", exitCode: 1)))
        }
    }
    for (name, failure) in failures { printError("backfill: \(job) [\(name)]: \(failure.message)") }
    if let first = failures.first {
        throw CommandFailure(
            message: "\(command.rawValue) reached \(file.targets.count - failures.count) of \(file.targets.count) targets; not: " + failures.map(\.0).joined(separator: ", "),
            next: "`backfill status \(job) --targets \(file.file)` shows every target; the others were changed", exitCode: first.1.exitCode)
    }
}
