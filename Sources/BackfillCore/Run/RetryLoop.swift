import PostgresClient

/// The one rule for trying a failed transaction again, shared by batches and finalize steps: the
/// `RetryPolicy`'s decision for each failure, and after a lost connection, reconnecting with
/// growing delays until `retry.reconnect_timeout_ms` has passed since the connection was lost.
/// Pure: the time and the randomness come in as parameters.
struct RetryLoop: Sendable, Hashable {
    let policy: RetryPolicy
    let reconnectTimeoutMs: Int
    /// Which try of the current transaction the next one is (1-based).
    private(set) var attempt = 1
    /// Since when (seconds, the caller's clock) the connection has been lost; nil: connected.
    private(set) var reconnectingSince: Double?

    init(policy: RetryPolicy, reconnectTimeoutMs: Int) {
        self.policy = policy
        self.reconnectTimeoutMs = reconnectTimeoutMs
    }

    init(_ retry: JobSpec.Retry) {
        self.init(policy: RetryPolicy(retry), reconnectTimeoutMs: retry.reconnectTimeoutMs)
    }

    /// Whether a new connection is needed before the next try.
    var isReconnecting: Bool { reconnectingSince != nil }

    enum Decision: Sendable, Hashable {
        /// Try again after `delayMs` (rest, or with `reconnect` connect again first), with a
        /// batch half the size when `halve`. `attempt` is the try that failed.
        case retry(reason: RetryReason, attempt: Int, delayMs: Int, halve: Bool, reconnect: Bool)
        /// Give up: the failure, with the error's SQLSTATE, message, detail and hint, how often
        /// it was tried and whether the tries ran out (the caller adds where it happened).
        case fail(RunFailure)
    }

    /// The transaction failed and rolled back.
    mutating func failed(_ error: PostgresError, now seconds: Double, random: Double) -> Decision {
        switch policy.decide(error, attempt: attempt, random: random) {
        case .fail(let exhausted):
            return .fail(RunFailure(sqlstate: error.code.raw, attempts: attempt, exhausted: exhausted,
                                    message: error.message, detail: error.detail, hint: error.hint))
        case .retry(let reason, let delayMs, let halve, let reconnect):
            let failed = attempt
            attempt += 1
            if reconnect { reconnectingSince = reconnectingSince ?? seconds }
            return .retry(reason: reason, attempt: failed, delayMs: delayMs, halve: halve, reconnect: reconnect)
        }
    }

    /// Connecting again failed: wait and connect again (the delay grows with the attempts, at
    /// least half of its ceiling), until `reconnectTimeoutMs` since the connection was lost.
    mutating func reconnectFailed(_ error: PostgresError, now seconds: Double, random: Double) -> Decision {
        let since = reconnectingSince ?? seconds
        reconnectingSince = since
        guard (seconds - since) * 1000 < Double(reconnectTimeoutMs) else {
            return .fail(RunFailure(sqlstate: error.code.raw, attempts: attempt, exhausted: true,
                                    message: "lost the connection and could not reconnect within \(reconnectTimeoutMs) ms: \(error.message)"))
        }
        let delay = policy.delay(attempt: attempt + 1, random: 0.5 + random / 2)
        let failed = attempt
        attempt += 1
        return .retry(reason: .connectionLost, attempt: failed, delayMs: delay, halve: false, reconnect: true)
    }

    /// A new connection is ready; the attempts go on counting until a try succeeds.
    mutating func reconnected() { reconnectingSince = nil }

    /// The transaction committed: the next one starts at attempt 1.
    mutating func succeeded() { attempt = 1 }
}
