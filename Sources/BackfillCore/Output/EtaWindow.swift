/// The rate behind the ETA: progress per second of *active* time over a moving window. Time spent
/// waiting on a health throttle (replica or slot lag, archiving, `check_sql`, an unreadable
/// signal) is counted apart and never slows the estimate; rests that set the job's pace (the
/// row and WAL budgets, `batch.pause_ms`) are part of active time. Pure: time comes in as seconds.
public struct EtaWindow: Sendable, Hashable {
    /// How much active time the rate looks back over.
    public let windowSeconds: Double
    public private(set) var activeSeconds = 0.0
    public private(set) var throttledSeconds = 0.0
    /// Whether a health throttle holds the job now.
    public private(set) var isThrottled = false
    private var lastTime: Double?
    /// (active seconds, progress) at each recorded point, oldest first.
    private var samples: [Sample] = []

    private struct Sample: Sendable, Hashable {
        var active: Double
        var progress: Double
    }

    public init(windowSeconds: Double = 60) {
        self.windowSeconds = windowSeconds
    }

    /// Moves the clock to `now`; the time since the last call is active or throttled time.
    public mutating func advance(to now: Double) {
        if let lastTime, now > lastTime {
            if isThrottled { throttledSeconds += now - lastTime } else { activeSeconds += now - lastTime }
        }
        lastTime = max(lastTime ?? now, now)
    }

    /// A health throttle starts (`true`) or ends at `now`.
    public mutating func setThrottled(_ throttled: Bool, at now: Double) {
        advance(to: now)
        isThrottled = throttled
    }

    /// Progress (a fraction, or rows: any measure that grows to a known end) reached at `now`.
    public mutating func record(progress: Double, at now: Double) {
        advance(to: now)
        samples.append(Sample(active: activeSeconds, progress: progress))
        // Keep one sample at or before the window's start, so the window spans all of it.
        while samples.count > 2, samples[1].active <= activeSeconds - windowSeconds { samples.removeFirst() }
    }

    /// Progress per active second over the window; nil before two points apart in time, or
    /// when no progress was made in the window.
    public var rate: Double? {
        guard let first = samples.first, let last = samples.last, last.active > first.active, last.progress > first.progress else { return nil }
        return (last.progress - first.progress) / (last.active - first.active)
    }

    /// Active seconds left to reach `total` from `progress` at the window's rate.
    public func eta(progress: Double, total: Double) -> Double? {
        guard let rate, progress < total else { return nil }
        return (total - progress) / rate
    }
}
