import ArgumentParser
import BackfillCore
import Foundation

struct Revert: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Put back what a job with `journal: true` replaced, where the application has not changed the rows since (docs/journal.md).",
        discussion: """
            Walks the job's journal, newest pass first, in short batches, each one transaction with its \
            checkpoint (kill -9 safe: run it again to go on). A row gets its old values back only when its \
            current values are still the ones the job wrote; a row changed since is left and counted \
            (--conflicts lists them). Deleted rows are inserted again unless their key is taken. \
            Finalize steps that ran are not undone.

            Exit codes: 0 every row restored (the job is `reverted`); 1 some rows were left (conflicts) \
            or the revert failed; 2 a running job, a job without journal, an invalid job file or flag \
            (nothing changed); 3 stopped before the end (run again to go on); 4 another runner holds the job.
            """)

    @Argument(help: "The job file the job ran with.") var file: String
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: OutputOptions
    var logFormat: LogFormat { output.logFormat }

    @Flag(name: .long, help: "Count what would be restored and what conflicts, changing nothing.")
    var dryRun = false

    @Flag(name: .long, help: "List the rows the revert left because the application changed them (key, pass, when), instead of reverting.")
    var conflicts = false

    @Option(name: .long, help: "table or json (for --conflicts)") var format: OutputFormat = .table

    @Option(name: .long, help: "Stop after the batch in flight once this much time has passed (90s, 10m); exit 3, resumable.", transform: DurationArgument.init(parsing:))
    var maxRuntime: DurationArgument?

    func run() throws {
        let spec = try loadSpec(file)
        if conflicts {
            let conn = try connect(db, as: "revert")
            guard let rows = try db.store.revertConflicts(job: spec.name, db: conn) else { throw noSuchJob(spec.name, db) }
            switch format {
            case .json: try printJSON(rows)
            case .table: print(BadRowsTable.render(rows, job: spec.name))
            }
            return
        }
        let stop = StopSignal()
        let outcome: RevertOutcome = try output.withConsole(stop: stop) { _, emit in
            var reverter = Reverter(spec: spec, database: db.conninfo)
            reverter.store = db.store
            reverter.dryRun = dryRun
            reverter.maxRuntime = maxRuntime?.seconds
            reverter.stop = stop
            reverter.emit = emit
            do {
                return try reverter.run()
            } catch let error as JobFileError {
                throw CommandFailure.invalid("invalid: \(error)")
            }
        }
        let next = "`backfill status \(spec.name)` shows the job"
        let finished = outcome.exitCode == 0 || (outcome.exitCode == 1 && (outcome.message == nil || outcome.conflicts > 0))
        switch outcome.exitCode {
        case _ where finished:
            let verb = dryRun ? "would restore" : "restored"
            let left = outcome.conflicts == 0 ? "" : "; \(outcome.conflicts) rows \(dryRun ? "would be" : "were") left because the application changed them since the job wrote them"
                + (dryRun ? "" : " (`backfill revert \(file) --conflicts` lists them)")
            print("\(spec.name): \(outcome.message.map { $0 + ": " } ?? "")\(verb) \(outcome.restored) rows\(left)")
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        case 2:
            throw CommandFailure.invalid(outcome.message ?? "refused", next: next + "; nothing was changed")
        default:
            throw CommandFailure(message: "\(spec.name): \(outcome.message ?? "revert stopped")", next: next + "; rows restored so far are kept, run `backfill revert \(file)` again to go on",
                                 exitCode: outcome.exitCode)
        }
    }
}
