import Foundation
import PostgresClient

// The payload of the run's ends, `requires`, finalize, `backfill wait`, fleet and revert events,
// as typed values. What each field means, and its JSON name, is in docs/events.md;
// `RunEvent+Fields.swift` encodes them.

extension RunEvent {
    /// `stop`: the run stopped before done.
    public struct Stop: Sendable, Hashable {
        public var reason: StopReason
        /// Why, when the lease was lost.
        public var message: String?
        public var summary: RunSummary
        public var exitCode: Int32
        public var next: String

        public init(reason: StopReason, message: String? = nil, summary: RunSummary, exitCode: Int32, next: String) {
            self.reason = reason
            self.message = message
            self.summary = summary
            self.exitCode = exitCode
            self.next = next
        }
    }

    /// `done`: the job is done.
    public struct Done: Sendable, Hashable {
        public var summary: RunSummary
        public var exitCode: Int32
        public var next: String

        public init(summary: RunSummary, exitCode: Int32, next: String) {
            self.summary = summary
            self.exitCode = exitCode
            self.next = next
        }
    }

    /// `error`: the run failed, or was refused.
    public struct Failed: Sendable, Hashable {
        public enum Cause: Sendable, Hashable {
            /// The run failed: what failed, and the run's summary.
            case run(RunFailure, RunSummary)
            /// The run was refused (another runner, an invalid job file or database object).
            case refused(message: String)
        }

        public var cause: Cause
        public var exitCode: Int32
        public var next: String

        public init(cause: Cause, exitCode: Int32, next: String) {
            self.cause = cause
            self.exitCode = exitCode
            self.next = next
        }

        /// The message people read.
        public var message: String {
            switch cause {
            case .run(let failure, _): failure.description
            case .refused(let message): message
            }
        }
    }

    /// `requirements`: the job's `requires` is waited for, or holds.
    public struct Requirements: Sendable, Hashable {
        public enum State: Sendable, Hashable {
            /// Not met yet: what `requires` returned (or the server's error), and how long the run waits.
            case waiting(detail: String, timeout: Duration)
            case met(waited: Duration)
        }

        public var requires: String
        public var state: State

        public init(requires: String, state: State) {
            self.requires = requires
            self.state = state
        }
    }

    /// `finalize`: a `finalize` step.
    public struct Finalize: Sendable, Hashable {
        public enum State: Sendable, Hashable {
            case started
            /// Recorded done by an earlier run.
            case skipped
            case done(attempts: Int, took: Duration)
        }

        /// 1-based.
        public var step: Int
        public var steps: Int
        public var statement: String
        public var state: State

        public init(step: Int, steps: Int, statement: String, state: State) {
            self.step = step
            self.steps = steps
            self.statement = statement
            self.state = state
        }
    }

    /// `wait`: `backfill wait` saw the job (or a fleet's target, or the fleet's end).
    public struct Wait: Sendable, Hashable {
        public enum Reading: Sendable, Hashable {
            /// The job as the store has it.
            case job(state: JobState, rowsDone: Int64, percentDone: Double?, eta: Duration?, noRunnerSince: Date?)
            /// The store does not hold the job yet; whether the store's schema exists (nil: not said).
            case notRegistered(storeExists: Bool?)
            /// A fleet's target that cannot be reached.
            case unreachable
            /// The end of a fleet's wait: every target done, or not.
            case fleet(done: Bool, targets: Int)
        }

        /// How the wait ended.
        public struct End: Sendable, Hashable {
            public var exitCode: Int32
            public var next: String
            public init(exitCode: Int32, next: String) { (self.exitCode, self.next) = (exitCode, next) }
        }

        public var reading: Reading
        /// What the text line says.
        public var line: String
        public var waited: Duration
        /// Set on the last one.
        public var end: End?

        public init(reading: Reading, line: String, waited: Duration, end: End? = nil) {
            self.reading = reading
            self.line = line
            self.waited = waited
            self.end = end
        }
    }

    /// `fleet`: a target not started, or the fleet run's end.
    public enum Fleet: Sendable, Hashable {
        case skipped(reason: String, line: String)
        case done(FleetEnd)
    }

    /// The end of a fleet run: every target's state and exit code, in file order.
    public struct FleetEnd: Sendable, Hashable {
        public struct Target: Sendable, Hashable {
            public var name: String
            public var state: String
            /// Nil for a target not started.
            public var exitCode: Int32?
            public init(name: String, state: String, exitCode: Int32?) { (self.name, self.state, self.exitCode) = (name, state, exitCode) }
        }

        public var targets: [Target]
        public var seconds: Duration
        public var line: String
        public var exitCode: Int32
        public var next: String

        public init(targets: [Target], seconds: Duration, line: String, exitCode: Int32, next: String) {
            self.targets = targets
            self.seconds = seconds
            self.line = line
            self.exitCode = exitCode
            self.next = next
        }
    }

    /// `revert`: `backfill revert` started, or walked the whole journal.
    public enum Revert: Sendable, Hashable {
        /// `afterSeq`: the revert's checkpoint it goes on from, nil at first.
        case started(dryRun: Bool, afterSeq: Int64?)
        case ended(dryRun: Bool, restored: Int64, conflicts: Int64, exitCode: Int32)
    }
}
