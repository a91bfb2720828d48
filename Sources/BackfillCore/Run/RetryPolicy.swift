import PostgresClient

/// Decides what happens after a batch transaction fails. Pure: the randomness comes in as a
/// parameter, so that tests can pin it.
public struct RetryPolicy: Sendable, Hashable {
    public let maxAttempts: Int
    public let baseMs: Int
    public let capMs: Int

    public init(maxAttempts: Int, baseMs: Int, capMs: Int) {
        self.maxAttempts = maxAttempts
        self.baseMs = baseMs
        self.capMs = capMs
    }

    public init(_ retry: JobSpec.Retry) {
        self.init(maxAttempts: retry.maxAttempts, baseMs: retry.backoffMs, capMs: retry.maxBackoffMs)
    }

    /// What to do about a failed batch.
    public enum Decision: Sendable, Hashable {
        /// Roll back, wait `delayMs`, then try the same batch again (smaller when `halveBatch`,
        /// on a new connection when `reconnect`).
        case retry(reason: RetryReason, delayMs: Int, halveBatch: Bool, reconnect: Bool)
        /// Stop the job: the error is permanent, or the attempts are used up.
        case fail(exhausted: Bool)
    }

    /// The decision for the `attempt`-th failure (1-based) of the same batch. `random` is a number
    /// in 0..<1 that picks the delay (full jitter: uniform between 0 and the exponential ceiling).
    public func decide(_ error: PostgresError, attempt: Int, random: Double) -> Decision {
        guard case .retry(let reason) = error.batchDisposition else { return .fail(exhausted: false) }
        guard attempt < maxAttempts else { return .fail(exhausted: true) }
        return .retry(
            reason: reason, delayMs: delay(attempt: attempt, random: random),
            halveBatch: reason == .statementTimeout, reconnect: reason == .connectionLost)
    }

    /// Full-jitter exponential backoff: uniform in 0…min(cap, base × 2^(attempt−1)).
    public func delay(attempt: Int, random: Double) -> Int {
        let ceiling = min(Double(capMs), Double(baseMs) * pow2(max(0, attempt - 1)))
        return Int((ceiling * min(max(random, 0), 1)).rounded())
    }

    private func pow2(_ n: Int) -> Double { n >= 62 ? Double(Int64.max) : Double(Int64(1) << n) }
}
