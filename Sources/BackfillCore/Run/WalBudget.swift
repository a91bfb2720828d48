/// The WAL budget of `throttle.max_wal_mb_per_second`: a token bucket over WAL bytes, fed with
/// samples of `pg_current_wal_lsn()`. Pure: positions and time come in as parameters, and its
/// state round-trips through the job's row so that every worker of every process shares one budget.
public struct WalBudget: Sendable, Hashable {
    public let bytesPerSecond: Double
    /// How much WAL may pass in a burst: one second's worth.
    public var capacity: Double { bytesPerSecond }
    /// A sample older than this restarts the budget, so that WAL written while no run watched
    /// (between runs, overnight) is not charged to the next run.
    public static let staleAfterSeconds = 10.0

    public private(set) var tokens: Double
    public private(set) var lastLSN: UInt64?
    public private(set) var lastSeconds: Double?

    /// A budget of `mbPerSecond` MB (2^20 bytes) per second, resumed from a stored state.
    public init(mbPerSecond: Int, tokens: Double = 0, lastLSN: UInt64? = nil, lastSeconds: Double? = nil) {
        bytesPerSecond = Double(mbPerSecond) * 1_048_576
        self.tokens = tokens
        self.lastLSN = lastLSN
        self.lastSeconds = lastSeconds
    }

    /// Charges the WAL written since the last sample (`lsn`, read at `now` seconds) and returns
    /// how many seconds to wait before the next batch (0 = go on).
    public mutating func observe(lsn: UInt64, now: Double) -> Double {
        defer { (lastLSN, lastSeconds) = (lsn, now) }
        guard bytesPerSecond > 0 else { return 0 }
        guard let lastLSN, let lastSeconds, now >= lastSeconds, now - lastSeconds <= Self.staleAfterSeconds, lsn >= lastLSN else {
            tokens = capacity
            return 0
        }
        tokens = min(capacity, tokens + (now - lastSeconds) * bytesPerSecond) - Double(lsn - lastLSN)
        return tokens >= 0 ? 0 : -tokens / bytesPerSecond
    }
}

/// How many WAL segments wait for the archiver, estimated from `pg_stat_archiver`: the segments
/// between the last archived one and the one being written now.
public enum ArchiveBacklog {
    /// Segments after `lastArchived` and before `current` (both WAL file names, such as
    /// `000000010000000000000003`), for segments of `segmentBytes`; nil when a name does not parse.
    public static func estimate(lastArchived: String, current: String, segmentBytes: Int64) -> Int64? {
        guard segmentBytes > 0, let last = segmentNumber(lastArchived, segmentBytes: segmentBytes),
              let now = segmentNumber(current, segmentBytes: segmentBytes)
        else { return nil }
        return max(0, now - last - 1)
    }

    /// The segment number of a WAL file name (timeline, log and segment, 8 hex digits each).
    static func segmentNumber(_ name: String, segmentBytes: Int64) -> Int64? {
        let chars = Array(name.prefix(24))
        guard chars.count == 24, let log = Int64(String(chars[8..<16]), radix: 16), let seg = Int64(String(chars[16..<24]), radix: 16) else { return nil }
        return log * (0x1_0000_0000 / segmentBytes) + seg
    }
}
