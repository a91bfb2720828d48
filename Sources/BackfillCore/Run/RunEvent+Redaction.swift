import PostgresClient

extension RunEvent.Body {
    /// Passes every text of the event (messages, details, lines, statements, names) through
    /// `text`: a fleet target's events keep its connection string out of them
    /// (`FleetRunner.withTarget`). Names from a closed set (reasons, states) and keys are left as
    /// they are.
    mutating func redact(_ text: (String) -> String) {
        func optional(_ value: String?) -> String? { value.map(text) }
        switch self {
        case .start(var e):
            (e.table, e.action, e.keyIndex, e.runner, e.runID, e.cdcOrigin) = (text(e.table), text(e.action), text(e.keyIndex), text(e.runner), text(e.runID), optional(e.cdcOrigin))
            self = .start(e)
        case .batch, .revertBatch, .revert:
            break
        case .retry(var e):
            (e.sqlstate, e.message) = (optional(e.sqlstate), optional(e.message))
            self = .retry(e)
        case .throttle(var e):
            switch e.cause {
            case .waiting(let reason, let detail): e.cause = .waiting(reason, detail: text(detail))
            case .revert(let reason, let detail): e.cause = .revert(reason, detail: text(detail))
            case .blocking, .watchdog, .rowBudget, .resumed: break
            }
            self = .throttle(e)
        case .pass(var e):
            e.reason = text(e.reason)
            self = .pass(e)
        case .badRow(var e):
            (e.sqlstate, e.message, e.detail) = (text(e.sqlstate), text(e.message), optional(e.detail))
            self = .badRow(e)
        case .stop(var e):
            (e.message, e.next) = (optional(e.message), text(e.next))
            self = .stop(e)
        case .done(var e):
            e.next = text(e.next)
            self = .done(e)
        case .error(var e):
            switch e.cause {
            case .run(var failure, let summary):
                (failure.sqlstate, failure.message, failure.detail, failure.hint) = (optional(failure.sqlstate), text(failure.message), optional(failure.detail), optional(failure.hint))
                e.cause = .run(failure, summary)
            case .refused(let message):
                e.cause = .refused(message: text(message))
            }
            e.next = text(e.next)
            self = .error(e)
        case .requirements(var e):
            e.requires = text(e.requires)
            if case .waiting(let detail, let timeout) = e.state { e.state = .waiting(detail: text(detail), timeout: timeout) }
            self = .requirements(e)
        case .finalize(var e):
            e.statement = text(e.statement)
            self = .finalize(e)
        case .tune(var e):
            e.by = optional(e.by)
            self = .tune(e)
        case .wait(var e):
            e.line = text(e.line)
            if let next = e.end?.next { e.end?.next = text(next) }
            self = .wait(e)
        case .connections(var e):
            e.message = text(e.message)
            if case .reduced(let needed, let free, let limit, let workers, let watchdog) = e.state {
                e.state = .reduced(needed: needed, free: free, limit: text(limit), workers: workers, watchdog: watchdog)
            }
            self = .connections(e)
        case .cdc(.warning(let message)):
            self = .cdc(.warning(message: text(message)))
        case .cdc(.origin(let name, let worker)):
            self = .cdc(.origin(text(name), worker: worker))
        case .fleet(.skipped(let reason, let line)):
            self = .fleet(.skipped(reason: text(reason), line: text(line)))
        case .fleet(.done(var e)):
            (e.line, e.next) = (text(e.line), text(e.next))
            self = .fleet(.done(e))
        }
    }
}
