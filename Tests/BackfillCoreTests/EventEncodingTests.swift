import BackfillCore
import Foundation
import Logging
import Synchronization
import Testing

/// One typed event and the fields of its JSON line, exactly: names, order, formats and nulls.
struct EventCase: Sendable, CustomTestStringConvertible {
    var name: String
    var body: RunEvent.Body
    var fields: String

    var testDescription: String { name }
}

private let noRunnerSince = Date(timeIntervalSince1970: 1_795_000_000.25)

private func summary(_ state: JobState) -> RunSummary {
    var s = RunSummary(job: "j", state: state)
    (s.rows, s.rowsBefore, s.batches, s.seconds, s.batchMs) = (10, 5, 2, 2, [1, 3])
    s.retries = [.deadlock: 1]
    s.throttledSeconds = ["blocking": 0.25]
    if state == .done {
        s.endCheck = .init(mode: .overlapped, took: .milliseconds(12.5))
        s.badRows = 2
    }
    return s
}

private let summaryFields = #""rows":10,"run_rows":10,"rows_done":15,"batches":2,"seconds":2.000,"rows_per_second":5.000,"batch_p50_ms":1.000,"batch_p99_ms":3.000,"batch_max_ms":3.000,"retries":1,"run_bad_rows":0"#
private let summaryTail = #""retries_deadlock":1,"throttled_seconds_blocking":0.250"#

extension EventCase {
    /// Every event and variant the code emits.
    static let all: [EventCase] = [
        EventCase(name: "start", body: .start(.init(
            table: "accounts", action: "update", rowsEstimate: nil, rowsDoneBefore: 5, batchSize: 1000, target: .milliseconds(50), keyIndex: "accounts_pkey",
            runner: "h:1", runID: "r1", cdcOrigin: "backfill", cdcMessages: true, keyBounds: .init(min: 1, max: 2000), mode: .run(workers: 2, ranges: 4))),
            fields: #""table":"accounts","action":"update","rows_estimate":null,"rows_done_before":5,"batch_size":1000,"target_ms":50,"key_index":"accounts_pkey","runner":"h:1","run_id":"r1","cdc_origin":"backfill","cdc_messages":true,"key_min":1.000,"key_max":2000.000,"workers":2,"ranges":4"#),
        EventCase(name: "start, dry run", body: .start(.init(
            table: "t", action: "delete", rowsEstimate: 100, rowsDoneBefore: 0, batchSize: 10, target: .milliseconds(50), keyIndex: "t_pkey",
            runner: "h:1", runID: "r1", mode: .dryRun)),
            fields: #""table":"t","action":"delete","rows_estimate":100,"rows_done_before":0,"batch_size":10,"target_ms":50,"key_index":"t_pkey","runner":"h:1","run_id":"r1","dry_run":true"#),
        EventCase(name: "batch", body: .batch(.init(
            rows: 5, batchSize: 10, keys: 10, duration: .milliseconds(1.5), attempt: 1, lastKey: ["a\nb", "2"], range: 0, rowsDone: 1005, runRows: 5,
            nextBatchSize: 20, bound: .span, walBytes: 8192, hotUpdateRatio: 0.5, worker: 1)),
            fields: #""rows":5,"batch_size":10,"keys":10,"duration_ms":1.500,"attempt":1,"last_key":["a\nb","2"],"range":0,"rows_done":1005,"run_rows":5,"next_batch_size":20,"bound":"span","wal_bytes":8192,"hot_update_ratio":0.500,"worker":1"#),
        EventCase(name: "batch, no write cost yet", body: .batch(.init(
            rows: 0, batchSize: 10, keys: 3, duration: .milliseconds(2), attempt: 2, lastKey: ["9"], range: 3, rowsDone: 0, runRows: 0,
            nextBatchSize: 10, bound: .counted, worker: 0)),
            fields: #""rows":0,"batch_size":10,"keys":3,"duration_ms":2.000,"attempt":2,"last_key":["9"],"range":3,"rows_done":0,"run_rows":0,"next_batch_size":10,"bound":"counted","worker":0"#),
        EventCase(name: "batch of a revert", body: .revertBatch(.init(
            dryRun: false, rows: 100, restored: 90, conflicts: 10, batchSize: 100, duration: .milliseconds(2), lastSeq: 41, nextBatchSize: 200)),
            fields: #""revert":true,"dry_run":false,"rows":100,"restored":90,"conflicts":10,"batch_size":100,"duration_ms":2.000,"last_seq":41,"next_batch_size":200"#),
        EventCase(name: "retry of a batch", body: .retry(.init(
            reason: .lockTimeout, attempt: 2, delay: .milliseconds(50), failedAfter: .milliseconds(10.25), sqlstate: "55P03", message: "lock", source: .worker(3, nextBatchSize: 500))),
            fields: #""reason":"lock_timeout","attempt":2,"delay_ms":50,"batch_size":500,"duration_ms":10.250,"sqlstate":"55P03","message":"lock","worker":3"#),
        EventCase(name: "retry of a batch, no failure known", body: .retry(.init(
            reason: .connectionLost, attempt: 1, delay: .milliseconds(100), source: .worker(0, nextBatchSize: 500))),
            fields: #""reason":"connection_lost","attempt":1,"delay_ms":100,"batch_size":500,"worker":0"#),
        EventCase(name: "retry of a finalize step", body: .retry(.init(
            reason: .deadlock, attempt: 1, delay: .milliseconds(20), failedAfter: .milliseconds(3), sqlstate: "40P01", message: "deadlock detected", source: .finalize(step: 2))),
            fields: #""reason":"deadlock","attempt":1,"delay_ms":20,"duration_ms":3.000,"sqlstate":"40P01","message":"deadlock detected","step":2"#),
        EventCase(name: "retry of a revert batch", body: .retry(.init(
            reason: .serializationFailure, attempt: 1, delay: .milliseconds(20), message: "could not serialize", source: .revert)),
            fields: #""reason":"serialization_failure","attempt":1,"delay_ms":20,"message":"could not serialize","revert":true"#),
        EventCase(name: "throttle, blocking", body: .throttle(.init(
            cause: .blocking(waiters: 2, longestWait: .milliseconds(120.5), rest: .milliseconds(250), nextBatchSize: 500), worker: 0)),
            fields: #""reason":"blocking","waiters":2,"longest_wait_ms":120.500,"wait_ms":250.000,"batch_size":500,"worker":0"#),
        EventCase(name: "throttle, watchdog", body: .throttle(.init(
            cause: .watchdog(longestWait: .milliseconds(300), rest: .milliseconds(250), nextBatchSize: 250), worker: 1)),
            fields: #""reason":"blocking","watchdog":true,"longest_wait_ms":300.000,"wait_ms":250.000,"batch_size":250,"worker":1"#),
        EventCase(name: "throttle, row budget", body: .throttle(.init(cause: .rowBudget(wait: .milliseconds(40)), worker: 0)),
                  fields: #""reason":"max_rows_per_second","wait_ms":40.000,"worker":0"#),
        EventCase(name: "throttle, health waiting", body: .throttle(.init(cause: .waiting(.replicationLag, detail: "replica r1 is 12 s behind"), worker: 0)),
                  fields: #""reason":"replication_lag","detail":"replica r1 is 12 s behind","state":"waiting","worker":0"#),
        EventCase(name: "throttle, health resumed", body: .throttle(.init(cause: .resumed(.unreadable, waited: .seconds(5)), worker: 2)),
                  fields: #""reason":"signal_unreadable","state":"resumed","wait_ms":5000.000,"worker":2"#),
        EventCase(name: "throttle of a revert", body: .throttle(.init(cause: .revert(.checkSQL, detail: "check_sql returned false"), worker: nil)),
                  fields: #""reason":"check_sql","detail":"check_sql returned false","revert":true"#),
        EventCase(name: "pass, catch-up", body: .pass(.init(pass: 2, remaining: 3, reason: "catch-up 1 of 3: 3 rows", endCheck: .overlapped)),
                  fields: #""pass":2,"remaining":3,"reason":"catch-up 1 of 3: 3 rows","end_check":"overlapped""#),
        EventCase(name: "pass, repeat", body: .pass(.init(pass: nil, remaining: 1000, reason: "the next run's pass takes them", endCheck: .afterWalk)),
                  fields: #""remaining":1000,"reason":"the next run's pass takes them","end_check":"after_walk""#),
        EventCase(name: "bad_row", body: .badRow(.init(key: ["7", "x"], sqlstate: "22P02", message: "invalid input", detail: nil, range: 1, badRows: 3, worker: 0)),
                  fields: #""key":["7","x"],"sqlstate":"22P02","message":"invalid input","detail":null,"range":1,"bad_rows":3,"worker":0"#),
        EventCase(name: "stop, lease lost", body: .stop(.init(reason: .leaseLost, message: "lease lost: taken", summary: summary(.pending), exitCode: 3, next: "run again")),
                  fields: #""reason":"lease_lost","message":"lease lost: taken","state":"pending","# + summaryFields + "," + summaryTail + #","exit_code":3,"next":"run again""#),
        EventCase(name: "stop, signal", body: .stop(.init(reason: .signal, summary: summary(.pending), exitCode: 3, next: "run again")),
                  fields: #""reason":"signal","state":"pending","# + summaryFields + "," + summaryTail + #","exit_code":3,"next":"run again""#),
        EventCase(name: "done", body: .done(.init(summary: summary(.done), exitCode: 1, next: "list them")),
                  fields: #""state":"done","# + summaryFields + #","bad_rows":2,"# + summaryTail + #","end_check":"overlapped","end_check_ms":12.500,"exit_code":1,"next":"list them""#),
        EventCase(name: "error, a failed run", body: .error(.init(
            cause: .run(RunFailure(sqlstate: "22P02", range: 1, afterKey: ["10"], attempts: 3, exhausted: true, message: "bad", hint: "fix it"), summary(.failed)),
            exitCode: 1, next: "fix the cause")),
            fields: #""message":"batch in range 1 after key (10) failed 3 times, giving up: SQLSTATE 22P02 bad (hint: fix it)","sqlstate":"22P02","range":1,"after_key":["10"],"key":null,"attempts":3,"exhausted":true,"detail":null,"hint":"fix it","state":"failed","#
                + summaryFields + "," + summaryTail + #","exit_code":1,"next":"fix the cause""#),
        EventCase(name: "error, refused", body: .error(.init(cause: .refused(message: "another runner holds this job: h:2"), exitCode: 4, next: "wait")),
                  fields: #""message":"another runner holds this job: h:2","exit_code":4,"next":"wait""#),
        EventCase(name: "requirements, waiting", body: .requirements(.init(requires: "SELECT true", state: .waiting(detail: "`requires` returned false", timeout: .seconds(600)))),
                  fields: #""state":"waiting","detail":"`requires` returned false","requires":"SELECT true","timeout_ms":600000"#),
        EventCase(name: "requirements, met", body: .requirements(.init(requires: "SELECT true", state: .met(waited: .milliseconds(1500)))),
                  fields: #""state":"met","requires":"SELECT true","waited_ms":1500.000"#),
        EventCase(name: "finalize, started", body: .finalize(.init(step: 1, steps: 2, statement: "ALTER TABLE t VALIDATE CONSTRAINT c", state: .started)),
                  fields: #""step":1,"steps":2,"statement":"ALTER TABLE t VALIDATE CONSTRAINT c","state":"started""#),
        EventCase(name: "finalize, skipped", body: .finalize(.init(step: 1, steps: 2, statement: "SELECT 1", state: .skipped)),
                  fields: #""step":1,"steps":2,"statement":"SELECT 1","state":"skipped""#),
        EventCase(name: "finalize, done", body: .finalize(.init(step: 2, steps: 2, statement: "SELECT 1", state: .done(attempts: 2, took: .milliseconds(12)))),
                  fields: #""step":2,"steps":2,"statement":"SELECT 1","state":"done","attempts":2,"duration_ms":12.000"#),
        EventCase(name: "tune", body: .tune(.init(maxRowsPerSecond: 10000, target: .milliseconds(100), pause: .zero, workers: 2, by: "ann@db1", reset: false, stopping: true, worker: 3)),
                  fields: #""max_rows_per_second":10000,"target_ms":100,"pause_ms":0,"workers":2,"by":"ann@db1","reset":false,"stopping":true,"worker":3"#),
        EventCase(name: "tune, reset", body: .tune(.init(maxRowsPerSecond: 0, target: .milliseconds(50), pause: .milliseconds(5), workers: nil, by: nil, reset: true, stopping: false, worker: 1)),
                  fields: #""max_rows_per_second":0,"target_ms":50,"pause_ms":5,"workers":null,"by":null,"reset":true,"stopping":false,"worker":1"#),
        EventCase(name: "wait", body: .wait(.init(
            reading: .job(state: .running, rowsDone: 120_000, percentDone: 42, eta: .seconds(42), noRunnerSince: nil), line: "running 42.0% rows_done=120000", waited: .seconds(5))),
            fields: #""state":"running","rows_done":120000,"percent_done":42.000,"eta_seconds":42.000,"no_runner_since":null,"line":"running 42.0% rows_done=120000","waited_seconds":5.000"#),
        EventCase(name: "wait, the last one", body: .wait(.init(
            reading: .job(state: .pending, rowsDone: 7, percentDone: nil, eta: nil, noRunnerSince: noRunnerSince), line: "stopped", waited: .seconds(60),
            end: .init(exitCode: 3, next: "wait again"))),
            fields: #""state":"pending","rows_done":7,"percent_done":null,"eta_seconds":null,"no_runner_since":""# + RunEvent.timestamp(noRunnerSince)
                + #"","line":"stopped","waited_seconds":60.000,"exit_code":3,"next":"wait again""#),
        EventCase(name: "wait, not registered", body: .wait(.init(reading: .notRegistered(storeExists: false), line: "gate is not registered yet", waited: .zero)),
                  fields: #""state":"not_registered","store_exists":false,"line":"gate is not registered yet","waited_seconds":0.000"#),
        EventCase(name: "wait, a fleet's target not registered", body: .wait(.init(reading: .notRegistered(storeExists: nil), line: "not_registered", waited: .seconds(1))),
                  fields: #""state":"not_registered","line":"not_registered","waited_seconds":1.000"#),
        EventCase(name: "wait, a fleet's target unreachable", body: .wait(.init(reading: .unreachable, line: "could not connect", waited: .seconds(1))),
                  fields: #""state":"unreachable","line":"could not connect","waited_seconds":1.000"#),
        EventCase(name: "wait, a fleet's end", body: .wait(.init(reading: .fleet(done: false, targets: 3), line: "not done", waited: .seconds(10), end: .init(exitCode: 3, next: "wait again"))),
                  fields: #""state":"ended","targets":3,"line":"not done","waited_seconds":10.000,"exit_code":3,"next":"wait again""#),
        EventCase(name: "connections, reduced", body: .connections(.init(
            state: .reduced(needed: 7, free: 1, limit: "role r has CONNECTION LIMIT 3", workers: 1, watchdog: false), message: "1 of 4 workers run")),
            fields: #""state":"reduced","needed":7,"free":1,"limit":"role r has CONNECTION LIMIT 3","workers":1,"watchdog":false,"message":"1 of 4 workers run""#),
        EventCase(name: "connections, waiting", body: .connections(.init(state: .waiting, message: "worker 1 waits for a connection slot", worker: 1)),
                  fields: #""state":"waiting","message":"worker 1 waits for a connection slot","worker":1"#),
        EventCase(name: "connections, connected", body: .connections(.init(state: .connected, message: "worker 1 got a connection slot", worker: 1)),
                  fields: #""state":"connected","message":"worker 1 got a connection slot","worker":1"#),
        EventCase(name: "cdc, warning", body: .cdc(.warning(message: "wal_level is replica")),
                  fields: #""state":"warning","message":"wal_level is replica""#),
        EventCase(name: "cdc, origin", body: .cdc(.origin("backfill-2", worker: 1)),
                  fields: #""state":"origin","origin":"backfill-2","worker":1"#),
        EventCase(name: "fleet, skipped", body: .fleet(.skipped(reason: "stopped by a signal", line: "fill [b]: not started: stopped by a signal")),
                  fields: #""state":"skipped","reason":"stopped by a signal","line":"fill [b]: not started: stopped by a signal""#),
        EventCase(name: "fleet, done", body: .fleet(.done(.init(
            targets: [.init(name: "a", state: "done", exitCode: 0), .init(name: "b", state: "failed", exitCode: 1), .init(name: "c", state: "not_started", exitCode: nil)],
            seconds: .milliseconds(12_500), line: "total: 3 targets", exitCode: 1, next: "b: fix it"))),
            fields: #""state":"done","targets":3,"done":["a"],"unfinished":["b","c"],"target_states":["a=done","b=failed","c=not_started"],"exit_codes":["a=0","b=1","c=none"],"seconds":12.500,"line":"total: 3 targets","exit_code":1,"next":"b: fix it""#),
        EventCase(name: "revert, started", body: .revert(.started(dryRun: true, afterSeq: nil)),
                  fields: #""state":"started","dry_run":true,"after_seq":null"#),
        EventCase(name: "revert, ended", body: .revert(.ended(dryRun: false, restored: 90, conflicts: 10, exitCode: 1)),
                  fields: #""state":"reverted","restored":90,"conflicts":10,"exit_code":1"#),
        EventCase(name: "revert, dry run ended", body: .revert(.ended(dryRun: true, restored: 90, conflicts: 0, exitCode: 0)),
                  fields: #""state":"dry_run","restored":90,"conflicts":0,"exit_code":0"#),
    ]
}

@Suite("Events: typed values, encoded as the contract has them")
struct EventEncodingTests {
    let time = Date(timeIntervalSince1970: 1_795_000_000.123)

    @Test("each event's JSON line has exactly the contract's fields, in order, formatted and null as before", arguments: EventCase.all)
    func encodes(_ c: EventCase) {
        let event = RunEvent(c.body, job: "j", time: time)
        #expect(event.jsonLine == #"{"ts":""# + RunEvent.timestamp(time) + #"","event":""# + event.kind.rawValue + #"","job":"j","# + c.fields + "}")
    }

    /// Fields the code emits that the table of docs/events.md does not name (yet).
    static let undocumented: Set<String> = ["throttle.watchdog", "stop.message", "wait.targets"]

    @Test("every field of every event is named in its row of docs/events.md (or the summary's)", arguments: EventCase.all)
    func documented(_ c: EventCase) throws {
        let docs = try Self.eventDocs()
        let event = RunEvent(c.body, job: "j", time: time)
        let row = try #require(docs.rows[event.kind.rawValue], "docs/events.md has no row for `\(event.kind.rawValue)`")
        var text = row
        if event["revert"] == .bool(true) { text += docs.rows["revert"] ?? "" }
        if [.done, .stop, .error].contains(event.kind) { text += docs.summary }
        for (name, _) in event.fields where !Self.undocumented.contains("\(event.kind.rawValue).\(name)") {
            let documentedAs = name.hasPrefix("retries_") ? "retries_<reason>" : name.hasPrefix("throttled_seconds_") ? "throttled_seconds_<reason>" : name
            #expect(["`", ":", " ", "/"].contains { text.contains("`\(documentedAs)" + $0) }, "`\(event.kind.rawValue)`: `\(name)` is not in docs/events.md")
        }
    }

    @Test("the table covers every event of the contract, and the subscript reads the line's fields")
    func coverage() {
        #expect(Set(EventCase.all.map { $0.body.kind }) == Set(RunEvent.Kind.allCases))
        let batch = RunEvent(EventCase.all[2].body, job: "j")
        #expect(batch.kind == .batch && batch["rows"] == .int(5) && batch["duration_ms"] == .double(1.5) && batch["last_key"] == .strings(["a\nb", "2"]))
        #expect(batch["no_such_field"] == nil)
    }

    @Test("the CLI's JSON logs carry the same fields, sorted by name after event, job and target, at the event's level")
    func jsonLogs() {
        let lines = LockedLines()
        let logger = EventLogger(logger: Logger(label: "test") { JSONLogHandler(label: $0, write: lines.append) }, peopleOnly: false)
        var warning = RunEvent(.cdc(.warning(message: "wal_level is replica")), job: "j")
        warning.target = "shard-a"
        logger.log(warning)
        logger.log(RunEvent(.throttle(.init(cause: .rowBudget(wait: .milliseconds(40)), worker: 0)), job: "j"))
        let logged = lines.all.map { $0.replacing(#/"ts":"[^"]*",/#, with: "") }
        #expect(logged == [#"{"level":"warning","event":"cdc","job":"j","target":"shard-a","message":"wal_level is replica","state":"warning"}"#,
                           #"{"level":"notice","event":"throttle","job":"j","reason":"max_rows_per_second","wait_ms":40.000,"worker":0}"#])
    }

    @Test("console lines are made from the typed events", arguments: [
        ("start", "j: started on accounts (update, ~? rows by statistics, key index accounts_pkey)"),
        ("start, dry run", "j: started on t (delete, ~100 rows by statistics, key index t_pkey)"),
        ("batch", nil), ("batch of a revert", nil),
        ("retry of a batch", "j: retrying (lock_timeout) attempt 2 in 50 ms: lock"),
        ("retry of a batch, no failure known", "j: retrying (connection_lost) attempt 1 in 100 ms: ?"),
        ("throttle, blocking", "j: throttled (blocking): 2 sessions waited on the last batch; batch now 500 keys, resting 250.0 ms"),
        ("throttle, watchdog", "j: cancelled a batch: a live session had waited 300.0 ms on its locks; batch now 250 keys, resting 250.0 ms"),
        ("throttle, row budget", nil),
        ("throttle, health waiting", "j: throttled (replication_lag): replica r1 is 12 s behind; waiting"),
        ("throttle, health resumed", "j: resumed after 5000.0 ms throttled (signal_unreadable)"),
        ("pass, repeat", "j: the next run's pass takes them"),
        ("bad_row", "j: bad row (7, x) quarantined (3 so far): SQLSTATE 22P02 invalid input"),
        ("stop, lease lost", "j: stopped (lease_lost): lease lost: taken"),
        ("stop, signal", "j: stopped (signal)"),
        ("done", "j: done with 2 bad rows"),
        ("error, a failed run", "backfill: j failed: batch in range 1 after key (10) failed 3 times, giving up: SQLSTATE 22P02 bad (hint: fix it)"),
        ("requirements, waiting", "j: waiting for the requirement (`requires` returned false): SELECT true"),
        ("requirements, met", "j: requirement met after 1.5 s: SELECT true"),
        ("finalize, started", "j: finalize step 1 of 2: ALTER TABLE t VALIDATE CONSTRAINT c"),
        ("finalize, skipped", "j: finalize step 1 of 2 was done by an earlier run: SELECT 1"),
        ("finalize, done", "j: finalize step 2 of 2 done in 12.0 ms (2 attempts)"),
        ("tune", "j: worker 3: tuned by ann@db1: max_rows_per_second=10000 target_ms=100 pause_ms=0; it stops (workers=2)"),
        ("tune, reset", "j: worker 1: tuning reset to the job file's values"),
        ("wait", "j: running 42.0% rows_done=120000"),
        ("wait, not registered", "gate is not registered yet"),
        ("connections, waiting", "j: connections: worker 1 waits for a connection slot"),
        ("cdc, warning", "j: warning: cdc: wal_level is replica"), ("cdc, origin", nil),
        ("fleet, done", "total: 3 targets"),
        ("revert, ended", "j: revert restored 90 rows, 10 left (changed since the job wrote them)"),
        ("revert, dry run ended", "j: revert dry run: would restore 90 rows, 0 left (changed since the job wrote them)"),
    ] as [(String, String?)])
    func consoleLines(_ name: String, _ line: String?) throws {
        let c = try #require(EventCase.all.first { $0.name == name })
        #expect(ConsoleFormat.line(RunEvent(c.body, job: "j")) == line)
    }

    @Test("the progress line's state follows the typed events")
    func progressStates() throws {
        func body(_ name: String) -> RunEvent.Body { EventCase.all.first { $0.name == name }!.body }
        var tracker = ProgressTracker()
        let steps: [(String, String)] = [
            ("start, dry run", "running"), ("requirements, waiting", "waiting for requirements"), ("requirements, met", "running"),
            ("retry of a batch", "retrying: lock_timeout"), ("batch of a revert", "running"), ("throttle, blocking", "throttled: blocking"),
            ("throttle, health waiting", "throttled: replication_lag"), ("throttle, health resumed", "running"), ("pass, catch-up", "pass 2"),
            ("pass, repeat", "pass 2"), ("bad_row", "pass 2"), ("finalize, done", "finalizing 2/2"), ("stop, signal", "stopped: signal"),
            ("error, refused", "failed"), ("done", "done"),
        ]
        for (name, state) in steps {
            tracker.consume(RunEvent(body(name), job: "j"))
            #expect(tracker.state == state, "after \(name)")
        }
        #expect(tracker.badRows == 3 && tracker.fraction == 1 && tracker.batchSize == 200 && tracker.rowsEstimate == 100)
    }

    @Test("a fleet target's events keep its connection string out of every text, typed and encoded")
    func redacted() {
        let target = FleetTarget(name: "shard-a", index: 0, database: "host=db1 password=s3cret dbname=shard_a")
        let secret = "host=db1 password=s3cret dbname=shard_a"
        let bodies: [RunEvent.Body] = [
            .retry(.init(reason: .connectionLost, attempt: 1, delay: .milliseconds(5), message: "lost \(secret)", source: .worker(0, nextBatchSize: 10))),
            .connections(.init(state: .waiting, message: "no slot on \(secret)", worker: 0)),
            .error(.init(cause: .run(RunFailure(message: "cannot reach \(secret)", detail: secret), RunSummary(job: "j", state: .failed)), exitCode: 1, next: "fix it")),
            .throttle(.init(cause: .waiting(.checkSQL, detail: "check_sql on \(secret) failed"), worker: 0)),
        ]
        for body in bodies {
            let event = FleetRunner.withTarget(RunEvent(body, job: "j"), target)
            #expect(event.target == "shard-a" && !event.jsonLine.contains("s3cret"), "\(event.jsonLine)")
            #expect(ConsoleFormat.line(event).map { !$0.contains("s3cret") && $0.hasPrefix("j [shard-a]") || $0.hasPrefix("backfill: j [shard-a]") } == true)
        }
    }

    /// docs/events.md's table rows by event name, and the paragraph on the summary fields.
    static func eventDocs() throws -> (rows: [String: String], summary: String) {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("docs/events.md"), encoding: .utf8)
        var rows: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `") {
            let name = line.dropFirst(3).prefix { $0 != "`" }
            if rows[String(name)] == nil { rows[String(name)] = String(line) }
        }
        let summary = text.components(separatedBy: "\n\n").first { $0.hasPrefix("The summary fields of") } ?? ""
        return (rows, summary)
    }
}

/// Lines a log handler wrote, from any thread.
final class LockedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
}
