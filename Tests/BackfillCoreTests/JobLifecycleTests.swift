import BackfillCore
import Testing

@Suite("Job lifecycle: every (state, command) pair")
struct JobLifecycleTests {
    /// The whole table: what each command does in each state. `nil` means refused.
    static let expected: [JobState: [JobCommand: JobLifecycle.Decision?]] = [
        .pending: [.pause: .to(.paused), .resume: nil, .cancel: .to(.cancelled), .forget: nil],
        .running: [.pause: .to(.paused), .resume: nil, .cancel: .to(.cancelled), .forget: nil],
        .paused: [.pause: nil, .resume: .to(.pending), .cancel: .to(.cancelled), .forget: nil],
        .done: [.pause: nil, .resume: nil, .cancel: nil, .forget: .remove],
        .failed: [.pause: nil, .resume: nil, .cancel: .to(.cancelled), .forget: .remove],
        .cancelled: [.pause: nil, .resume: nil, .cancel: nil, .forget: .remove],
        .finalizing: [.pause: nil, .resume: nil, .cancel: .to(.cancelled), .forget: nil],
        .reverting: [.pause: .to(.paused), .resume: nil, .cancel: .to(.cancelled), .forget: nil],
        .reverted: [.pause: nil, .resume: nil, .cancel: nil, .forget: .remove],
    ]

    /// What the run's own steps do from each state. `nil` means refused.
    static let expectedRunSteps: [JobState: [JobLifecycle.RunStep: JobLifecycle.Decision?]] = [
        .pending: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .running: [.finalizeStarts: .to(.finalizing), .finalizeDone: nil, .finalizeFailed: nil],
        .paused: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .done: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .failed: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .cancelled: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .finalizing: [.finalizeStarts: .to(.finalizing), .finalizeDone: .to(.done), .finalizeFailed: .to(.failed)],
        .reverting: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
        .reverted: [.finalizeStarts: nil, .finalizeDone: nil, .finalizeFailed: nil],
    ]

    /// What `backfill revert` does from each state. `nil` means refused.
    static let expectedRevertSteps: [JobState: [JobLifecycle.RevertStep: JobLifecycle.Decision?]] = [
        .pending: [.starts: .to(.reverting), .finishes: nil],
        .running: [.starts: nil, .finishes: nil],
        .paused: [.starts: nil, .finishes: nil],
        .done: [.starts: .to(.reverting), .finishes: nil],
        .failed: [.starts: .to(.reverting), .finishes: nil],
        .cancelled: [.starts: .to(.reverting), .finishes: nil],
        .finalizing: [.starts: nil, .finishes: nil],
        .reverting: [.starts: .to(.reverting), .finishes: .to(.reverted)],
        .reverted: [.starts: nil, .finishes: nil],
    ]

    @Test("a revert starts from a stopped job (not running or finalizing), goes on after a stop, and ends reverted",
          arguments: JobState.allCases, JobLifecycle.RevertStep.allCases)
    func revertStep(state: JobState, step: JobLifecycle.RevertStep) throws {
        let decision = JobLifecycle.decide(step, from: state)
        expect(decision, try #require(Self.expectedRevertSteps[state]?[step]), "\(step) from \(state)")
        if state == .running, step == .starts, case .refuse(let reason) = decision { #expect(reason.contains("stop it first")) }
    }

    @Test("a walked and verified job finalizes: running → finalizing → done or failed; an operator's pause or cancel wins",
          arguments: JobState.allCases, JobLifecycle.RunStep.allCases)
    func runStep(state: JobState, step: JobLifecycle.RunStep) throws {
        let decision = JobLifecycle.decide(step, from: state)
        expect(decision, try #require(Self.expectedRunSteps[state]?[step]), "\(step) from \(state)")
        if state == .cancelled, case .refuse(let reason) = decision { #expect(reason.contains("--restart")) }
    }

    @Test("each command acts only from the states where it makes sense, and says why otherwise",
          arguments: JobState.allCases, JobCommand.allCases)
    func transition(state: JobState, command: JobCommand) throws {
        expect(JobLifecycle.decide(command, from: state), try #require(Self.expected[state]?[command]), "\(command) from \(state)")
    }

    /// The decision is the expected one, or a refusal with a reason when nil is expected.
    private func expect(_ decision: JobLifecycle.Decision, _ expected: JobLifecycle.Decision?, _ what: String) {
        if let expected {
            #expect(decision == expected, "\(what)")
        } else if case .refuse(let reason) = decision {
            #expect(!reason.isEmpty)
        } else {
            Issue.record("\(what) should be refused, got \(decision)")
        }
    }

    @Test("a cancelled job is not resumed: only run --restart starts it again")
    func cancelledIsNotResumed() {
        guard case .refuse(let reason) = JobLifecycle.decide(.resume, from: .cancelled) else {
            Issue.record("resume of a cancelled job was allowed")
            return
        }
        #expect(reason.contains("--restart"))
    }
}
