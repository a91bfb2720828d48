/// A token bucket for `throttle.max_rows_per_second`. Pure: time comes in as a parameter.
public struct RateLimiter: Sendable, Hashable {
    public let rowsPerSecond: Double
    /// How many rows may pass in a burst (one second's worth).
    public let capacity: Double
    private var tokens: Double
    private var lastSeconds: Double?

    /// A limiter; `rowsPerSecond` 0 means unlimited.
    public init(rowsPerSecond: Int) {
        self.rowsPerSecond = Double(rowsPerSecond)
        self.capacity = Double(max(rowsPerSecond, 1))
        self.tokens = 0
    }

    public var isUnlimited: Bool { rowsPerSecond <= 0 }

    /// Takes `rows` from the bucket at time `now` (seconds on a monotonic clock) and returns how
    /// long to wait, in seconds, before the next batch may start.
    public mutating func consume(rows: Int, now: Double) -> Double {
        guard !isUnlimited else { return 0 }
        if let last = lastSeconds {
            tokens = min(capacity, tokens + (now - last) * rowsPerSecond)
        }
        lastSeconds = now
        tokens -= Double(rows)
        return tokens >= 0 ? 0 : -tokens / rowsPerSecond
    }
}
