import Foundation
import PostgresClient

// The one place where events become the JSON line's fields (docs/events.md): names, order,
// value formats (milliseconds as the contract has each: whole for settings and delays,
// fractions for measured times) and nulls.

private typealias Field = (String, RunEvent.Value)

extension RunEvent.Body {
    /// The event's name in the contract.
    public var kind: RunEvent.Kind {
        switch self {
        case .start: .start
        case .batch, .revertBatch: .batch
        case .retry: .retry
        case .throttle: .throttle
        case .pass: .pass
        case .badRow: .badRow
        case .stop: .stop
        case .done: .done
        case .error: .error
        case .requirements: .requirements
        case .finalize: .finalize
        case .tune: .tune
        case .wait: .wait
        case .connections: .connections
        case .cdc: .cdc
        case .fleet: .fleet
        case .revert: .revert
        }
    }

    /// The event's fields, in the contract's order.
    public var fields: [(String, RunEvent.Value)] {
        switch self {
        case .start(let e): Self.fields(e)
        case .batch(let e): Self.fields(e)
        case .revertBatch(let e):
            [("revert", .bool(true)), ("dry_run", .bool(e.dryRun)), ("rows", .int(e.rows)), ("restored", .int(e.restored)), ("conflicts", .int(e.conflicts)),
             ("batch_size", int(e.batchSize)), ("duration_ms", ms(e.duration)), ("last_seq", .int(e.lastSeq)), ("next_batch_size", int(e.nextBatchSize))]
        case .retry(let e): Self.fields(e)
        case .throttle(let e): Self.fields(e)
        case .pass(let e):
            (e.pass.map { [("pass", int($0))] } ?? []) + [("remaining", .int(e.remaining)), ("reason", .string(e.reason)), ("end_check", .string(e.endCheck.rawValue))]
        case .badRow(let e):
            [("key", .strings(e.key)), ("sqlstate", .string(e.sqlstate)), ("message", .string(e.message)), ("detail", optional(e.detail, RunEvent.Value.string)),
             ("range", int(e.range)), ("bad_rows", .int(e.badRows)), ("worker", int(e.worker))]
        case .stop(let e):
            [("reason", .string(e.reason.rawValue))] + (e.message.map { [("message", .string($0))] } ?? []) + Self.fields(e.summary) + closing(e.exitCode, e.next)
        case .done(let e): Self.fields(e.summary) + closing(e.exitCode, e.next)
        case .error(let e):
            switch e.cause {
            case .run(let failure, let summary): Self.fields(failure) + Self.fields(summary) + closing(e.exitCode, e.next)
            case .refused(let message): [("message", .string(message))] + closing(e.exitCode, e.next)
            }
        case .requirements(let e):
            switch e.state {
            case .waiting(let detail, let timeout):
                [("state", .string("waiting")), ("detail", .string(detail)), ("requires", .string(e.requires)), ("timeout_ms", wholeMs(timeout))]
            case .met(let waited): [("state", .string("met")), ("requires", .string(e.requires)), ("waited_ms", ms(waited))]
            }
        case .finalize(let e):
            [("step", int(e.step)), ("steps", int(e.steps)), ("statement", .string(e.statement))] + {
                switch e.state {
                case .started: [("state", .string("started"))]
                case .skipped: [("state", .string("skipped"))]
                case .done(let attempts, let took): [("state", .string("done")), ("attempts", int(attempts)), ("duration_ms", ms(took))]
                }
            }()
        case .tune(let e):
            [("max_rows_per_second", int(e.maxRowsPerSecond)), ("target_ms", wholeMs(e.target)), ("pause_ms", wholeMs(e.pause)),
             ("workers", optional(e.workers) { int($0) }), ("by", optional(e.by, RunEvent.Value.string)), ("reset", .bool(e.reset)),
             ("stopping", .bool(e.stopping)), ("worker", int(e.worker))]
        case .wait(let e): Self.fields(e)
        case .connections(let e):
            switch e.state {
            case .reduced(let needed, let free, let limit, let workers, let watchdog):
                [("state", .string("reduced")), ("needed", int(needed)), ("free", int(free)), ("limit", .string(limit))]
                    + (workers.map { [("workers", int($0))] } ?? []) + (watchdog.map { [("watchdog", .bool($0))] } ?? [])
                    + [("message", .string(e.message))] + worker(e.worker)
            case .waiting: [("state", .string("waiting")), ("message", .string(e.message))] + worker(e.worker)
            case .connected: [("state", .string("connected")), ("message", .string(e.message))] + worker(e.worker)
            }
        case .cdc(.warning(let message)): [("state", .string("warning")), ("message", .string(message))]
        case .cdc(.origin(let name, let index)): [("state", .string("origin")), ("origin", .string(name)), ("worker", int(index))]
        case .fleet(.skipped(let reason, let line)): [("state", .string("skipped")), ("reason", .string(reason)), ("line", .string(line))]
        case .fleet(.done(let e)):
            [("state", .string("done")), ("targets", int(e.targets.count)),
             ("done", .strings(e.targets.filter { $0.exitCode == 0 }.map(\.name))),
             ("unfinished", .strings(e.targets.filter { $0.exitCode != 0 }.map(\.name))),
             ("target_states", .strings(e.targets.map { "\($0.name)=\($0.state)" })),
             ("exit_codes", .strings(e.targets.map { "\($0.name)=\($0.exitCode.map(String.init) ?? "none")" })),
             ("seconds", .double(e.seconds.seconds)), ("line", .string(e.line))] + closing(e.exitCode, e.next)
        case .revert(.started(let dryRun, let afterSeq)):
            [("state", .string("started")), ("dry_run", .bool(dryRun)), ("after_seq", optional(afterSeq, RunEvent.Value.int))]
        case .revert(.ended(let dryRun, let restored, let conflicts, let exitCode)):
            [("state", .string(dryRun ? "dry_run" : "reverted")), ("restored", .int(restored)), ("conflicts", .int(conflicts)), ("exit_code", int(exitCode))]
        }
    }

    private static func fields(_ e: RunEvent.Start) -> [Field] {
        var fields: [Field] = [
            ("table", .string(e.table)), ("action", .string(e.action)), ("rows_estimate", optional(e.rowsEstimate, RunEvent.Value.int)),
            ("rows_done_before", .int(e.rowsDoneBefore)), ("batch_size", int(e.batchSize)), ("target_ms", wholeMs(e.target)),
            ("key_index", .string(e.keyIndex)), ("runner", .string(e.runner)), ("run_id", .string(e.runID)),
        ]
        if let origin = e.cdcOrigin { fields.append(("cdc_origin", .string(origin))) }
        if e.cdcMessages { fields.append(("cdc_messages", .bool(true))) }
        if let bounds = e.keyBounds { fields += [("key_min", .double(bounds.min)), ("key_max", .double(bounds.max))] }
        switch e.mode {
        case .dryRun: fields.append(("dry_run", .bool(true)))
        case .run(let workers, let ranges): fields += [("workers", int(workers)), ("ranges", int(ranges))]
        }
        return fields
    }

    private static func fields(_ e: RunEvent.Batch) -> [Field] {
        [("rows", .int(e.rows)), ("batch_size", int(e.batchSize)), ("keys", int(e.keys)), ("duration_ms", ms(e.duration)), ("attempt", int(e.attempt)),
         ("last_key", .strings(e.lastKey)), ("range", int(e.range)), ("rows_done", .int(e.rowsDone)), ("run_rows", .int(e.runRows)),
         ("next_batch_size", int(e.nextBatchSize)), ("bound", .string(e.bound.rawValue))]
            + (e.walBytes.map { [("wal_bytes", .int($0))] } ?? []) + (e.hotUpdateRatio.map { [("hot_update_ratio", .double($0))] } ?? [])
            + [("worker", int(e.worker))]
    }

    private static func fields(_ e: RunEvent.Retry) -> [Field] {
        var fields: [Field] = [("reason", .string(e.reason.rawValue)), ("attempt", int(e.attempt)), ("delay_ms", wholeMs(e.delay))]
        if case .worker(_, let next) = e.source { fields.append(("batch_size", int(next))) }
        if let failedAfter = e.failedAfter { fields.append(("duration_ms", ms(failedAfter))) }
        if let sqlstate = e.sqlstate { fields.append(("sqlstate", .string(sqlstate))) }
        if let message = e.message { fields.append(("message", .string(message))) }
        switch e.source {
        case .worker(let index, _): fields.append(("worker", int(index)))
        case .finalize(let step): fields.append(("step", int(step)))
        case .revert: fields.append(("revert", .bool(true)))
        }
        return fields
    }

    private static func fields(_ e: RunEvent.Throttle) -> [Field] {
        let reason: Field = ("reason", .string(e.reason.rawValue))
        let fields: [Field] = switch e.cause {
        case .blocking(let waiters, let longest, let rest, let next):
            [reason, ("waiters", int(waiters)), ("longest_wait_ms", ms(longest)), ("wait_ms", ms(rest)), ("batch_size", int(next))]
        case .watchdog(let longest, let rest, let next):
            [reason, ("watchdog", .bool(true)), ("longest_wait_ms", ms(longest)), ("wait_ms", ms(rest)), ("batch_size", int(next))]
        case .rowBudget(let wait): [reason, ("wait_ms", ms(wait))]
        case .waiting(_, let detail): [reason, ("detail", .string(detail)), ("state", .string("waiting"))]
        case .resumed(_, let waited): [reason, ("state", .string("resumed")), ("wait_ms", ms(waited))]
        case .revert(_, let detail): [reason, ("detail", .string(detail)), ("revert", .bool(true))]
        }
        return fields + worker(e.worker)
    }

    private static func fields(_ e: RunEvent.Wait) -> [Field] {
        let reading: [Field] = switch e.reading {
        case .job(let state, let rowsDone, let percentDone, let eta, let noRunnerSince):
            [("state", .string(state.rawValue)), ("rows_done", .int(rowsDone)), ("percent_done", optional(percentDone, RunEvent.Value.double)),
             ("eta_seconds", optional(eta) { .double($0.seconds) }), ("no_runner_since", optional(noRunnerSince) { .string(RunEvent.timestamp($0)) })]
        case .notRegistered(let storeExists):
            [("state", .string(JobWait.notRegistered))] + (storeExists.map { [("store_exists", .bool($0))] } ?? [])
        case .unreachable: [("state", .string("unreachable"))]
        case .fleet(let done, let targets): [("state", .string(done ? "done" : "ended")), ("targets", int(targets))]
        }
        return reading + [("line", .string(e.line)), ("waited_seconds", .double(e.waited.seconds))] + (e.end.map { closing($0.exitCode, $0.next) } ?? [])
    }

    /// The summary fields of `done`, `stop` and `error`.
    private static func fields(_ s: RunSummary) -> [Field] {
        var fields: [Field] = [
            ("state", .string(s.state.rawValue)), ("rows", .int(s.rows)), ("run_rows", .int(s.rows)), ("rows_done", .int(s.rowsDone)),
            ("batches", .int(s.batches)), ("seconds", .double(s.seconds)), ("rows_per_second", .double(s.rowsPerSecond)),
            ("batch_p50_ms", .double(s.batchPercentile(0.5))), ("batch_p99_ms", .double(s.batchPercentile(0.99))),
            ("batch_max_ms", .double(s.batchMs.max() ?? 0)), ("retries", int(s.retries.values.reduce(0, +))), ("run_bad_rows", .int(s.runBadRows)),
        ]
        if s.state == .done { fields.append(("bad_rows", .int(s.badRows))) }
        for (reason, count) in s.retries.sorted(by: { $0.key.rawValue < $1.key.rawValue }) { fields.append(("retries_\(reason.rawValue)", int(count))) }
        for (reason, seconds) in s.throttledSeconds.sorted(by: { $0.key < $1.key }) { fields.append(("throttled_seconds_\(reason)", .double(seconds))) }
        if let check = s.endCheck { fields += [("end_check", .string(check.mode.rawValue)), ("end_check_ms", ms(check.took))] }
        return fields
    }

    /// The failure fields of a failed run's `error`.
    private static func fields(_ f: RunFailure) -> [Field] {
        [("message", .string(f.description)), ("sqlstate", optional(f.sqlstate, RunEvent.Value.string)),
         ("range", optional(f.range) { int($0) }), ("after_key", optional(f.afterKey, RunEvent.Value.strings)),
         ("key", optional(f.key, RunEvent.Value.strings)),
         ("attempts", int(f.attempts)), ("exhausted", .bool(f.exhausted)),
         ("detail", optional(f.detail, RunEvent.Value.string)), ("hint", optional(f.hint, RunEvent.Value.string))]
    }
}

private func closing(_ exitCode: Int32, _ next: String) -> [Field] {
    [("exit_code", int(exitCode)), ("next", .string(next))]
}

private func worker(_ index: Int?) -> [Field] {
    index.map { [("worker", int($0))] } ?? []
}

private func int(_ value: some BinaryInteger) -> RunEvent.Value { .int(Int64(value)) }

/// Measured times: fractional milliseconds.
private func ms(_ duration: Duration) -> RunEvent.Value { .double(duration.milliseconds) }

/// Settings and delays: whole milliseconds.
private func wholeMs(_ duration: Duration) -> RunEvent.Value {
    .int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
}

private func optional<T>(_ value: T?, _ encode: (T) -> RunEvent.Value) -> RunEvent.Value {
    value.map(encode) ?? .null
}
