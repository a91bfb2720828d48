import ArgumentParser
import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a throwaway PostgreSQL, create a sample table, run jobs/demo.yaml with live progress, and clean up.")

    @Option(name: .long, help: "Rows in the sample table.")
    var rows: Int = 1_000_000

    @OptionGroup var output: OutputOptions

    func run() throws {
        printError("demo: starting a throwaway PostgreSQL cluster…")
        let cluster: LocalPostgres
        do {
            cluster = try LocalPostgres.start(durable: true)
        } catch {
            printError("demo: \(error)")
            throw ExitCode(1)
        }
        defer { cluster.stop() }
        let conninfo = cluster.conninfo()
        printError("demo: creating public.accounts with \(rows) rows…")
        try DemoData.seed(rows: rows, on: try Connection(conninfo, applicationName: "backfill:demo"))
        let spec = try JobSpec.parse(yaml: DemoData.jobYAML, file: "jobs/demo.yaml")
        let stop = StopSignal()
        let signals = SignalHandling.install(stop: stop)
        defer { withExtendedLifetime(signals) {} }
        let outcome = try output.withConsole { console, emit in
            let outcome = Runner(spec: spec, options: RunOptions(database: conninfo), stop: stop, emit: emit).run()
            console.finish(outcome, job: spec.name)
            return outcome
        }
        if case .done = outcome {
            let left = try Planner.countMatching(spec, on: try Connection(conninfo))
            printError("demo: verified: \(left) rows still match `\(spec.whereClause ?? "")`; removing the cluster")
        }
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}
