import ArgumentParser
import BackfillCore
import Foundation

struct BadRows: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bad-rows",
        abstract: "List the rows a job quarantined because they cannot be written (on_error: skip): key, SQLSTATE, message, when.")
    @Argument(help: "The job's name.") var job: String
    @OptionGroup var db: DatabaseOptions
    @Option(name: .long, help: "table or json") var format: OutputFormat = .table

    func run() throws {
        let conn = try connect(db, as: "bad-rows")
        guard let rows = try db.store.badRows(job: job, db: conn) else { throw noSuchJob(job, db) }
        switch format {
        case .json:
            try printJSON(rows)
        case .table:
            print(BadRowsTable.render(rows, job: job))
        }
    }
}
