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
    ]

    @Test("each command acts only from the states where it makes sense, and says why otherwise",
          arguments: JobState.allCases, JobCommand.allCases)
    func transition(state: JobState, command: JobCommand) throws {
        let expected = try #require(Self.expected[state]?[command])
        let decision = JobLifecycle.decide(command, from: state)
        if let expected {
            #expect(decision == expected)
        } else if case .refuse(let reason) = decision {
            #expect(!reason.isEmpty)
        } else {
            Issue.record("\(command) from \(state) should be refused, got \(decision)")
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
