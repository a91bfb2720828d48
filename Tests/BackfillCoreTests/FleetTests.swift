import BackfillCore
import Foundation
import Testing

@Suite("Fleet: targets file, selection, schedule and exit code")
struct FleetTests {
    let file = """
        targets:
          - name: shard-a
            database: postgresql://app:s3cret@db1:5432/shard_a
          - name: shard-b
            database: postgresql://app@db1/shard_b
          - name: shard-c
            database: ${SHARD_C_URL}
          - name: shard-d
            database: host=db2 port=6432 dbname=shard_d
        concurrency: 2
        canary: shard-b
        on_target_failure: continue
        per_host: 1
        """
    let env = ["SHARD_C_URL": "postgresql://app@db2:6432/shard_c"]

    @Test("a targets file's fields, ${VAR} filled in, and each target's server")
    func parses() throws {
        let targets = try TargetsFile.parse(yaml: file, file: "t.yaml", environment: env)
        #expect(targets.targets.map(\.name) == ["shard-a", "shard-b", "shard-c", "shard-d"])
        #expect(targets.targets.map(\.index) == [0, 1, 2, 3])
        #expect(targets.targets[2].database == "postgresql://app@db2:6432/shard_c")
        #expect(targets.targets.map(\.server) == ["db1:5432", "db1:5432", "db2:6432", "db2:6432"])
        #expect(targets.concurrency == 2 && targets.canary == "shard-b" && targets.onTargetFailure == .continue && targets.perHost == 1)
    }

    @Test("defaults: concurrency 1, no canary, stop, no per-host limit")
    func defaults() throws {
        let targets = try TargetsFile.parse(yaml: "targets:\n  - {name: a, database: 'dbname=a'}\n", file: "t.yaml", environment: [:])
        #expect(targets.concurrency == 1 && targets.canary == nil && targets.onTargetFailure == .stop && targets.perHost == nil)
    }

    @Test("every problem in one pass, each with its field, line and fix")
    func problems() {
        let yaml = """
            targets:
              - name: a
                database: dbname=a
              - name: a
                database: dbname=b
              - name: Bad Name
                database: dbname=c
              - database: dbname=d
              - name: e
            concurrency: 0
            canary: zzz
            on_target_failure: maybe
            per_host: many
            extra: 1
            """
        #expect(throws: JobFileError.self) { try TargetsFile.parse(yaml: yaml, file: "t.yaml", environment: [:]) }
        do {
            _ = try TargetsFile.parse(yaml: yaml, file: "t.yaml", environment: [:])
        } catch {
            let fields = error.all.map { $0.field ?? "-" }
            for field in ["extra", "targets[1].name", "targets[2].name", "targets[3].name", "targets[4].database", "concurrency", "on_target_failure", "per_host"] {
                #expect(fields.contains(field), "\(field) not reported: \(fields)")
            }
            #expect(error.all.allSatisfy { $0.file == "t.yaml" && !$0.fix.isEmpty })
            #expect(error.all.first { $0.field == "targets[1].name" }?.line == 4)
            #expect(error.all.first { $0.field == "targets[4].database" }?.line == 9)
        }
    }

    @Test("an unset ${VAR} names the variable and the target; a password is never quoted")
    func unsetVariable() {
        #expect {
            try TargetsFile.parse(yaml: file, file: "t.yaml", environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("SHARD_C_URL") && text.contains("shard-c") && text.contains("targets[2].database") && !text.contains("s3cret")
        }
        // A target left out of the selection need not have its variable.
        #expect(throws: Never.self) { try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(names: ["shard-a"]), environment: [:]) }
        // A connection string libpq cannot read is refused without quoting it.
        #expect {
            try TargetsFile.parse(yaml: "targets:\n  - {name: a, database: 'postgresql://u:hunter2@h:x/d'}\n", file: "t.yaml", environment: [:])
        } throws: { "\($0)".contains("port") && !"\($0)".contains("hunter2") }
        #expect(throws: JobFileError.self) { try TargetsFile.parse(yaml: "targets:\n  - {name: a, database: '${1X}'}\n", file: "t.yaml", environment: [:]) }
    }

    @Test("--target takes targets by name in file order; --target-index the N-th from 0; the canary only when selected")
    func selection() throws {
        let some = try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(names: ["shard-d", "shard-a"]), environment: env)
        #expect(some.targets.map(\.name) == ["shard-a", "shard-d"])
        #expect(some.canary == nil)
        #expect(some.names == ["shard-a", "shard-b", "shard-c", "shard-d"])
        let third = try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(index: 2), environment: env)
        #expect(third.targets.map(\.name) == ["shard-c"] && third.targets[0].index == 2)
        let canary = try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(names: ["shard-b", "shard-c"]), environment: env)
        #expect(canary.canary == "shard-b")
        #expect { try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(index: 4), environment: env) } throws: { "\($0)".contains("0 to 3") }
        #expect { try TargetsFile.parse(yaml: file, file: "t.yaml", selection: TargetSelection(names: ["shard-x"]), environment: env) } throws: { "\($0)".contains("shard-x") }
    }

    @Test("a server is host:port as written, with libpq's defaults")
    func servers() {
        #expect(FleetTarget.server(of: "postgresql://u@h1/d", environment: [:]) == "h1:5432")
        #expect(FleetTarget.server(of: "dbname=d", environment: ["PGHOST": "h2", "PGPORT": "6000"]) == "h2:6000")
        #expect(FleetTarget.server(of: "dbname=d", environment: [:]) == "(local socket):5432")
    }

    /// Runs a schedule to its end: `codes` gives each target's exit code; returns the order
    /// targets started in, in waves (the targets started at one decision).
    func simulate(_ schedule: inout FleetSchedule, codes: [Int32]) -> [[Int]] {
        var waves: [[Int]] = []
        var running: [Int] = []
        while true {
            let started = schedule.startable()
            if !started.isEmpty { waves.append(started) }
            running += started
            if schedule.isOver { return waves }
            guard let first = running.first else { return waves }
            running.removeFirst()
            schedule.finished(first, exitCode: codes[first])
        }
    }

    @Test("concurrency: at most N at once, in file order")
    func concurrency() {
        var schedule = FleetSchedule(servers: ["a", "b", "c", "d", "e"], concurrency: 2)
        #expect(schedule.startable() == [0, 1])
        #expect(schedule.startable() == [])
        schedule.finished(1, exitCode: 0)
        #expect(schedule.startable() == [2])
        schedule.finished(0, exitCode: 0)
        #expect(schedule.startable() == [3])
        schedule.finished(2, exitCode: 0)
        schedule.finished(3, exitCode: 0)
        #expect(schedule.startable() == [4])
        #expect(!schedule.isOver)
        schedule.finished(4, exitCode: 0)
        #expect(schedule.isOver)
    }

    @Test("per_host: targets on one server count together; a held-back target is passed over for another server's")
    func perHost() {
        var schedule = FleetSchedule(servers: ["h1", "h1", "h1", "h2"], concurrency: 3, perHost: 1)
        #expect(schedule.startable() == [0, 3])
        schedule.finished(0, exitCode: 0)
        #expect(schedule.startable() == [1])
        schedule.finished(3, exitCode: 0)
        #expect(schedule.startable() == [])
        schedule.finished(1, exitCode: 0)
        #expect(schedule.startable() == [2])
    }

    @Test("the canary runs alone first; the others start once it is done; a canary that does not finish ends the fleet")
    func canary() {
        var schedule = FleetSchedule(servers: ["a", "b", "c"], concurrency: 3, canary: 2)
        #expect(simulate(&schedule, codes: [0, 0, 0]) == [[2], [0, 1]])
        for code: Int32 in [1, 2, 3, 4] {
            var failing = FleetSchedule(servers: ["a", "b", "c"], concurrency: 3, canary: 0, onFailure: .continue)
            #expect(simulate(&failing, codes: [code, 0, 0]) == [[0]], "canary exit \(code)")
            #expect(failing.isOver)
        }
    }

    @Test("on_target_failure: stop starts no new target after a failure; continue goes on; stopped and held are not failures")
    func onFailure() {
        var stop = FleetSchedule(servers: ["a", "b", "c", "d"], concurrency: 1, onFailure: .stop)
        #expect(simulate(&stop, codes: [0, 2, 0, 0]) == [[0], [1]])
        var goOn = FleetSchedule(servers: ["a", "b", "c", "d"], concurrency: 1, onFailure: .continue)
        #expect(simulate(&goOn, codes: [0, 2, 1, 0]) == [[0], [1], [2], [3]])
        var held = FleetSchedule(servers: ["a", "b", "c"], concurrency: 1, onFailure: .stop)
        #expect(simulate(&held, codes: [4, 3, 0]) == [[0], [1], [2]])
        var halted = FleetSchedule(servers: ["a", "b"], concurrency: 1)
        #expect(halted.startable() == [0])
        halted.halt()
        halted.finished(0, exitCode: 3)
        #expect(halted.startable() == [] && halted.isOver)
    }

    @Test("the fleet's exit code: 0 all done, else the first unfinished target's in file order; not started counts 3 last")
    func exitCode() {
        #expect(FleetExit.code([0, 0, 0]) == 0)
        #expect(FleetExit.code([0, 2, 1]) == 2)
        #expect(FleetExit.code([1, 2, 0]) == 1)
        #expect(FleetExit.code([0, 4, 2]) == 4)
        #expect(FleetExit.code([0, 3, nil]) == 3)
        #expect(FleetExit.code([nil, 2, nil]) == 2)
        #expect(FleetExit.code([0, nil]) == 3)
        #expect(FleetExit.code([]) == 0)
    }

    @Test("a target's events carry its name, and its connection string is kept out of their text")
    func eventTarget() {
        let target = FleetTarget(name: "shard-a", index: 0, database: "host=db1 password=s3cret dbname=shard_a")
        let refused = RunEvent.Failed(cause: .refused(message: "cannot reach host=db1 password=s3cret dbname=shard_a"), exitCode: 1, next: "fix it")
        let event = FleetRunner.withTarget(RunEvent(.error(refused), job: "fill"), target)
        #expect(event.target == "shard-a")
        #expect(event.jsonLine.contains("\"job\":\"fill\",\"target\":\"shard-a\""))
        #expect(!event.jsonLine.contains("s3cret"))
        #expect(ConsoleFormat.line(event)?.hasPrefix("backfill: fill [shard-a] failed") == true)
    }
}
