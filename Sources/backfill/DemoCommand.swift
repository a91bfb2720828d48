import ArgumentParser
import BackfillCore
import Foundation
import LocalPostgres
import PostgresClient

struct Demo: ParsableCommand, LogFormatted {
    static let configuration = CommandConfiguration(
        abstract: "Start a throwaway PostgreSQL, create a sample table, run jobs/demo.yaml with live progress, and clean up.",
        discussion: """
            With --report, rehearse the job instead (5 s of live traffic from 4 clients alone, then the job under it, \
            with example gates: live p99 ≤ 50 ms, worst wait ≤ 500 ms) and write the HTML rehearsal report; the demo \
            exits 0 when the job finished, whatever the gates said.
            """)

    @Option(name: .long, help: "Rows in the sample table.")
    var rows: Int = 1_000_000

    @Option(help: ArgumentHelp("Rehearse the demo job and write its HTML report to this file.", valueName: "FILE.html"))
    var report: String?

    @OptionGroup var output: OutputOptions
    var logFormat: LogFormat { output.logFormat }

    func run() throws {
        let stop = StopSignal()
        let outcome = try output.withConsole(stop: stop) { console, emit in
            console.note("demo: starting a throwaway PostgreSQL cluster…")
            let cluster: LocalPostgres
            do {
                cluster = try LocalPostgres.start(durable: true)
            } catch {
                throw CommandFailure(message: "demo: \(error)", next: "install the PostgreSQL server programs (apt-get install postgresql), then try again", exitCode: 1)
            }
            defer { cluster.stop() }
            let conninfo = cluster.conninfo()
            console.note("demo: creating public.accounts with \(rows) rows…")
            try DemoData.seed(rows: rows, on: try Connection(conninfo, applicationName: "backfill:demo"))
            let spec = try JobSpec.parse(yaml: DemoData.jobYAML, file: "jobs/demo.yaml")
            if let report {
                console.note("demo: rehearsing \(spec.name): 5 s of live traffic alone, then the job under it…")
                var options = RehearsalOptions(database: conninfo)
                options.baselineSeconds = 5
                options.maxLiveP99Ms = 50
                options.maxLockWaitMs = 500
                let (result, outcome) = try Rehearsal.run(spec: spec, options: options, stop: stop, emit: emit)
                print(result.text)
                try result.html().write(toFile: report, atomically: true, encoding: .utf8)
                console.note("demo: report written to \(report)")
                return outcome
            }
            let outcome = Runner(spec: spec, options: RunOptions(database: conninfo), stop: stop, emit: emit).run()
            console.finish(outcome, job: spec.name)
            if case .done = outcome {
                let left = try Planner.countMatching(spec, on: try SessionPins.connect(conninfo, applicationName: "backfill:demo"))
                console.note("demo: verified: \(left) rows still match `\(spec.whereClause ?? "")`; removing the cluster")
            }
            return outcome
        }
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}
