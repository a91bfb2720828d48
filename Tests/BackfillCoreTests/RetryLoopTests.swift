@testable import BackfillCore
import PostgresClient
import Testing

/// The retry-and-reconnect rule of batches and finalize steps, without a database or a clock.
@Suite("Retry loop")
struct RetryLoopTests {
    let policy = RetryPolicy(maxAttempts: 4, baseMs: 100, capMs: 1000)
    let lockTimeout = PostgresError(code: .lockNotAvailable, message: "canceling statement due to lock timeout")
    let statementTimeout = PostgresError(code: .queryCanceled, message: "canceling statement due to statement timeout")
    let lost = PostgresError(code: .connectionFailure, message: "server closed the connection unexpectedly")
    let refused = PostgresError(code: .sqlclientUnableToEstablishSqlconnection, message: "connection refused")

    @Test("a retryable error is retried with the policy's backoff; the attempt counts up; a statement timeout halves")
    func retries() {
        var loop = RetryLoop(policy: policy, reconnectTimeoutMs: 5000)
        #expect(loop.attempt == 1)
        #expect(loop.failed(lockTimeout, now: 0, random: 0.5) == .retry(reason: .lockTimeout, attempt: 1, delayMs: 50, halve: false, reconnect: false))
        #expect(loop.failed(statementTimeout, now: 1, random: 1) == .retry(reason: .statementTimeout, attempt: 2, delayMs: 200, halve: true, reconnect: false))
        #expect(loop.attempt == 3)
        #expect(!loop.isReconnecting)
    }

    @Test("retries used up: fail, exhausted, with the error's SQLSTATE, message, detail and hint and the attempts")
    func exhausted() {
        var loop = RetryLoop(policy: policy, reconnectTimeoutMs: 5000)
        let error = PostgresError(code: .deadlockDetected, message: "deadlock detected", detail: "Process 1 waits", hint: "See server log")
        for _ in 1..<4 { guard case .retry = loop.failed(error, now: 0, random: 0) else { Issue.record("should retry"); return } }
        #expect(loop.failed(error, now: 0, random: 0) == .fail(RunFailure(
            sqlstate: "40P01", attempts: 4, exhausted: true, message: "deadlock detected", detail: "Process 1 waits", hint: "See server log")))
    }

    @Test("a permanent error fails at once, not exhausted")
    func permanent() {
        var loop = RetryLoop(policy: policy, reconnectTimeoutMs: 5000)
        _ = loop.failed(lockTimeout, now: 0, random: 0)
        let error = PostgresError(code: .undefinedTable, message: "relation \"t\" does not exist")
        #expect(loop.failed(error, now: 0, random: 0) == .fail(RunFailure(sqlstate: "42P01", attempts: 2, exhausted: false, message: error.message)))
    }

    @Test("a lost connection reconnects; failed reconnects back off (at least half the ceiling) until reconnect_timeout_ms since the loss, then fail")
    func reconnect() {
        var loop = RetryLoop(policy: RetryPolicy(maxAttempts: 100, baseMs: 100, capMs: 1000), reconnectTimeoutMs: 5000)
        #expect(loop.failed(lost, now: 10, random: 0.3) == .retry(reason: .connectionLost, attempt: 1, delayMs: 30, halve: false, reconnect: true))
        #expect(loop.isReconnecting && loop.reconnectingSince == 10)
        // delay(attempt: 3, random: 0.5 + 0 / 2): half of min(1000, 100 × 4).
        #expect(loop.reconnectFailed(refused, now: 11, random: 0) == .retry(reason: .connectionLost, attempt: 2, delayMs: 200, halve: false, reconnect: true))
        #expect(loop.reconnectFailed(refused, now: 12, random: 1) == .retry(reason: .connectionLost, attempt: 3, delayMs: 800, halve: false, reconnect: true))
        #expect(loop.reconnectFailed(refused, now: 14.99, random: 1) == .retry(reason: .connectionLost, attempt: 4, delayMs: 1000, halve: false, reconnect: true))
        #expect(loop.reconnectFailed(refused, now: 15, random: 0) == .fail(RunFailure(
            sqlstate: "08001", attempts: 5, exhausted: true, message: "lost the connection and could not reconnect within 5000 ms: connection refused")))
    }

    @Test("reconnected: the timeout's clock stops, the attempts go on until a success puts them back to 1")
    func reconnected() {
        var loop = RetryLoop(policy: RetryPolicy(maxAttempts: 100, baseMs: 100, capMs: 1000), reconnectTimeoutMs: 5000)
        _ = loop.failed(lost, now: 0, random: 0)
        _ = loop.reconnectFailed(refused, now: 1, random: 0)
        loop.reconnected()
        #expect(!loop.isReconnecting)
        #expect(loop.attempt == 3)
        // A loss long after: its own clock, not the first loss's.
        #expect(loop.failed(lost, now: 100, random: 0) == .retry(reason: .connectionLost, attempt: 3, delayMs: 0, halve: false, reconnect: true))
        guard case .retry = loop.reconnectFailed(refused, now: 104, random: 0) else { Issue.record("within 5 s of the second loss"); return }
        loop.reconnected()
        loop.succeeded()
        #expect(loop.attempt == 1)
        // A failed reconnect with no loss before it starts the clock itself.
        var fresh = RetryLoop(policy: policy, reconnectTimeoutMs: 0)
        guard case .fail(let failure) = fresh.reconnectFailed(refused, now: 7, random: 0) else { Issue.record("no time to reconnect"); return }
        #expect(failure.message == "lost the connection and could not reconnect within 0 ms: connection refused" && failure.attempts == 1)
    }
}
