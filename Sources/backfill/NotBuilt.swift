import ArgumentParser

/// Commands of the contract that are not built yet: they say so and exit 2 rather than pretend.
protocol NotBuiltYet: ParsableCommand {}

extension NotBuiltYet {
    func run() throws {
        let name = Self.configuration.commandName ?? String(describing: Self.self).lowercased()
        print("backfill \(name): not built yet in this version; see README.md for what works today")
        throw ExitCode(2)
    }
}

struct Run: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Run one or more job files.")
    @Argument var files: [String] = []
}
struct Plan: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Validate a job file, print its SQL and EXPLAIN one batch; changes nothing.")
    @Argument var file: String
}
struct Status: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Show the state of jobs in the checkpoint store.")
    @Argument var job: String?
}
struct Pause: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Pause a job; its runner stops after the batch in flight.")
    @Argument var job: String
}
struct Resume: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Allow a paused job to run again.")
    @Argument var job: String
}
struct Cancel: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Cancel a job; it runs again only with --restart.")
    @Argument var job: String
}
struct Verify: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Count rows still matching the job's `where`; exit 1 if any remain.")
    @Argument var file: String
}
struct Rehearse: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Staging load rehearsal: the job under synthetic live traffic, with an impact report.")
    @Argument var file: String
}
struct Demo: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Run a real job on a throwaway local PostgreSQL with sample data.")
}
