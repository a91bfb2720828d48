import Foundation
import PostgresClient

/// One row of `backfill status JOB --targets`: the job's status in one target's store, or why
/// there is none (the target cannot be reached, the job is not registered there yet).
public struct TargetStatus: Sendable, Encodable {
    public var target: String
    /// The server and database, without the password.
    public var database: String
    /// The job there; nil when the target cannot be reached or the job is not registered.
    public var status: JobStatus?
    /// Why the target could not be read (the server's reason, password removed).
    public var unreachable: String?

    public init(target: FleetTarget, status: JobStatus?, unreachable: String? = nil) {
        self.target = target.name
        self.database = ConnectionInfo.describe(target.database)
        self.status = status
        self.unreachable = unreachable.map { ConnectionInfo.redact($0, secrets: [target.database]) }
    }

    /// The job's state there, `unreachable`, or `not_registered`.
    public var state: String {
        if unreachable != nil { return "unreachable" }
        return status.map(JobWait.stateText) ?? JobWait.notRegistered
    }

    enum Keys: String, CodingKey {
        case target, database, state, reachable, rowsDone = "rows_done", percentDone = "percent_done", etaSeconds = "eta_seconds", lastError = "last_error"
    }

    /// The fields of `status --format json` for the job, with `target`, `database` and
    /// `reachable`; a row without a job has `state`, `rows_done` 0 and the reason in `last_error`.
    public func encode(to encoder: any Encoder) throws {
        if let status {
            try status.encode(to: encoder)
        }
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(target, forKey: .target)
        try container.encode(database, forKey: .database)
        try container.encode(unreachable == nil, forKey: .reachable)
        if status == nil {
            try container.encode(state, forKey: .state)
            try container.encode(0, forKey: .rowsDone)
            try container.encodeNil(forKey: .percentDone)
            try container.encodeNil(forKey: .etaSeconds)
            try container.encode(unreachable ?? "the job is not registered in this target's store yet (its run has not started there)", forKey: .lastError)
        }
    }
}

/// `status --targets`: every target's row and the fleet's total.
public struct FleetStatus: Sendable, Encodable {
    public var job: String
    public var targets: [TargetStatus]

    public init(job: String, targets: [TargetStatus]) {
        self.job = job
        self.targets = targets
    }

    /// Reads each target's store in turn; one that cannot be reached is a row saying so.
    public static func read(job: String, targets: [FleetTarget], store: CheckpointStore,
                            connect: (FleetTarget) throws -> Connection) -> FleetStatus {
        FleetStatus(job: job, targets: targets.map { target in
            do {
                let db = try connect(target)
                return TargetStatus(target: target, status: try store.status(job: job, db: db).first)
            } catch {
                return TargetStatus(target: target, status: nil, unreachable: "\(error)")
            }
        })
    }

    /// The total over the targets.
    public struct Total: Sendable, Encodable, Hashable {
        public var targets: Int
        /// How many targets are in each state (`done`, `running`, `unreachable`, …).
        public var states: [String: Int]
        public var rowsDone: Int64
        /// The mean of the targets' percent done, a target without one counting 0.
        public var percentDone: Double
        /// The longest ETA of the targets running now; nil when none is running.
        public var etaSeconds: Double?
        /// Whether every target's job is done.
        public var done: Bool

        enum CodingKeys: String, CodingKey {
            case targets, states, done, rowsDone = "rows_done", percentDone = "percent_done", etaSeconds = "eta_seconds"
        }
    }

    public var total: Total {
        var states: [String: Int] = [:]
        for row in targets { states[row.state, default: 0] += 1 }
        let statuses = targets.compactMap(\.status)
        return Total(
            targets: targets.count, states: states, rowsDone: statuses.reduce(0) { $0 + $1.rowsDone },
            percentDone: targets.isEmpty ? 0 : targets.reduce(0) { $0 + ($1.status?.percentDone ?? 0) } / Double(targets.count),
            etaSeconds: statuses.filter { $0.state == .running }.compactMap(\.etaSeconds).max(),
            done: !targets.isEmpty && statuses.count == targets.count && statuses.allSatisfy { $0.state == .done })
    }

    enum CodingKeys: String, CodingKey { case job, targets, total }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(job, forKey: .job)
        try container.encode(targets, forKey: .targets)
        try container.encode(total, forKey: .total)
    }

    /// The table for people: one row per target, then the total.
    public func render() -> String {
        let rows = targets.map { row -> [String] in
            let s = row.status
            var note = row.unreachable ?? s?.lastError ?? (s == nil ? "not registered in this target's store yet" : "")
            if let eta = s?.etaSeconds, s?.state == .running { note += (note.isEmpty ? "" : "; ") + "ETA ~\(ProgressTracker.clock(eta))" }
            if let reason = s?.throttleReason { note += (note.isEmpty ? "" : "; ") + "throttled: \(reason)" }
            return [row.target, row.state, s.map { String($0.rowsDone) } ?? "-", s?.percentDone.map { String(format: "%.1f%%", $0) } ?? "-",
                    s?.updatedAt.map(RunEvent.timestamp) ?? "-", note]
        }
        let t = total
        let summary = t.states.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let totalRow = ["TOTAL", t.done ? "done" : summary, String(t.rowsDone), String(format: "%.1f%%", t.percentDone), "-",
                        "\(t.targets) targets" + (t.etaSeconds.map { "; longest ETA ~\(ProgressTracker.clock($0))" } ?? "")]
        return "job \(job)\n" + StatusTable.columns([["TARGET", "STATE", "ROWS", "DONE", "UPDATED", "NOTE"]] + rows + [totalRow])
    }
}

/// `wait JOB --targets`: the fleet's deploy gate. Reads every target's store read-only once a
/// second until every target's job is done (exit 0), one failed or was cancelled (exit 1), or
/// the time is up (exit 3). A target that cannot be reached, or whose job is not registered
/// yet, is waited for: its run may still come.
public enum FleetWait {
    public static func run(job: String, targets: [FleetTarget], store: CheckpointStore, timeout: Double?, poll: Double = 1, every: Double = 5,
                           stop: StopSignal = StopSignal(), connect: (FleetTarget) throws -> Connection, emit: (RunEvent) -> Void) -> JobWait.Outcome {
        let began = ContinuousClock.now
        var sessions: [String: Connection] = [:]
        var lastShown = -every
        while true {
            let elapsed = (ContinuousClock.now - began).seconds
            var rows: [TargetStatus] = []
            for target in targets {
                do {
                    let db: Connection
                    if let open = sessions[target.name] {
                        db = open
                    } else {
                        db = try connect(target)
                        try db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                        sessions[target.name] = db
                    }
                    rows.append(TargetStatus(target: target, status: try store.status(job: job, db: db).first))
                } catch {
                    sessions[target.name] = nil
                    rows.append(TargetStatus(target: target, status: nil, unreachable: "\(error)"))
                }
            }
            let ended = rows.filter { JobWait.verdict($0.status?.state) == .finished(exitCode: 1) }
            let notDone = rows.filter { $0.status?.state != .done }
            var outcome: JobWait.Outcome?
            if !ended.isEmpty {
                outcome = JobWait.Outcome(
                    exitCode: 1, message: "\(job): " + ended.map { "\($0.target) is \($0.state)" + ($0.status?.lastError.map { ": \($0)" } ?? "") }.joined(separator: "; "),
                    next: "fix the cause, then run the fleet again (a cancelled target needs --restart): each target resumes from its checkpoint")
            } else if notDone.isEmpty {
                outcome = JobWait.Outcome(exitCode: 0, message: "\(job) is done on all \(targets.count) targets", next: "nothing: release what relies on it")
            } else if let timeout, elapsed >= timeout {
                outcome = JobWait.Outcome(
                    exitCode: 3, message: "\(job) is not done after \(Int(timeout.rounded())) s on \(notDone.count) of \(targets.count) targets: " + notDone.map { "\($0.target) \($0.state)" }.joined(separator: ", "),
                    next: "wait again, or check the targets with `backfill status \(job) --targets …`")
            } else if stop.isRequested {
                outcome = JobWait.Outcome(exitCode: 3, message: "stopped waiting for \(job) on \(notDone.count) targets", next: "wait again: the targets were not touched")
            }
            if outcome != nil || elapsed - lastShown >= every {
                for (row, target) in zip(rows, targets) {
                    let reading = row.status.map(JobWait.reading) ?? (row.unreachable == nil ? .notRegistered(storeExists: nil) : .unreachable)
                    let line = row.status.map(JobWait.line) ?? row.unreachable ?? row.state
                    emit(FleetRunner.withTarget(RunEvent(.wait(.init(reading: reading, line: line, waited: .seconds(elapsed))), job: job), target))
                }
                lastShown = elapsed
            }
            if let outcome {
                emit(RunEvent(.wait(.init(reading: .fleet(done: outcome.exitCode == 0, targets: targets.count), line: outcome.message, waited: .seconds(elapsed),
                                          end: .init(exitCode: outcome.exitCode, next: outcome.next))), job: job))
                return outcome
            }
            JobWait.nap(poll: poll, timeout: timeout, elapsed: elapsed, stop: stop)
        }
    }
}
