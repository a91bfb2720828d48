import ArgumentParser
import BackfillCore
import Foundation

struct Tune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change a job's pace while it runs: overrides kept in the store, read by every worker at its next batch.",
        discussion: """
            --max-rows-per-second, --target-ms and --pause-ms reach running workers at their next batch (the rate budget \
            is the job-wide token bucket, at the new rate). --workers applies to the next run; a running process stops \
            its workers numbered at or above it after their batch. Overrides beat the job file (and run --workers) \
            until `tune JOB --reset`; `status` shows them with who set them and when. Bounds are the job file's.
            """)

    @Argument(help: "The job's name.") var job: String
    @OptionGroup var db: DatabaseOptions
    @Option(name: .long, help: "Overrides throttle.max_rows_per_second (0 = unlimited).") var maxRowsPerSecond: Int?
    @Option(name: .long, help: "Overrides batch.target_ms.") var targetMs: Int?
    @Option(name: .long, help: "Overrides batch.pause_ms.") var pauseMs: Int?
    @Option(name: .long, help: "Overrides the number of workers.") var workers: Int?
    @Flag(name: .long, help: "Clear every override: the job file's values apply again.") var reset = false

    var overrides: Tuning { Tuning(maxRowsPerSecond: maxRowsPerSecond, targetMs: targetMs, pauseMs: pauseMs, workers: workers) }

    func validate() throws {
        if reset && !overrides.isEmpty { throw ValidationError("--reset clears every override; give it alone, or leave it out to set values") }
        if !reset && overrides.isEmpty { throw ValidationError("give at least one of --max-rows-per-second, --target-ms, --pause-ms, --workers, or --reset") }
        if let problem = overrides.problems.first { throw ValidationError(problem) }
    }

    func run() throws {
        let conn = try connect(db, as: "tune")
        switch try db.store.tune(job, overrides, reset: reset, by: operatorName, db: conn) {
        case .notFound:
            throw noSuchJob(job, db)
        case .storeTooOld(let version):
            throw CommandFailure.invalid("the checkpoint store in schema `\(db.schema)` is version \(version), older than tuning (8)",
                                        next: "run the job once with this version of backfill (it upgrades the store), then tune it")
        case .applied(nil):
            print("\(job): tuning reset by \(operatorName): the job file's values apply from each worker's next batch")
        case .applied(let tuning?):
            print("\(job): tuned: \(tuning.summary); running workers take it at their next batch")
        }
    }
}
