import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// Faults that take the whole server down run on a cluster of their own, so that they do not
/// disturb tests running in parallel on the shared one.
@Suite("Server restarts and crashes")
struct ServerFaultTests {
    @Test("a fast restart and a crashed backend end sessions with retryable errors")
    func restartAndCrash() throws {
        let cluster = try LocalPostgres.start()
        defer { cluster.stop() }
        let session = try Connection(cluster.conninfo())
        try cluster.restart()
        do {
            try session.query("SELECT 1")
            Issue.record("a session survived a restart")
        } catch let error as PostgresError {
            #expect(error.code == .adminShutdown || error.code.errorClass == "08", "\(error)")
            #expect(error.batchDisposition == .retry(.connectionLost))
        }

        // kill -9 of one backend makes the postmaster reset every other session (57P02).
        let bystander = try Connection(cluster.conninfo())
        let victim = try Connection(cluster.conninfo())
        #expect(kill(victim.backendPID, SIGKILL) == 0)
        Thread.sleep(forTimeInterval: 0.5)
        do {
            try bystander.query("SELECT 1")
            Issue.record("a session survived a backend crash")
        } catch let error as PostgresError {
            #expect(error.code == .crashShutdown || error.code.errorClass == "08", "\(error)")
            #expect(error.batchDisposition == .retry(.connectionLost))
        }
        // The server recovers and accepts connections again.
        var recovered = false
        for _ in 0..<50 where !recovered {
            if let c = try? Connection(cluster.conninfo()), (try? c.query("SELECT 1")) != nil { recovered = true }
            else { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(recovered)
    }
}
