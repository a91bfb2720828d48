/// Chooses the next batch size so that each batch transaction takes about `targetMs`.
///
/// Pure value type: fed the keys walked and the wall time of each batch, it keeps a smoothed rate
/// (keys per millisecond, an exponentially weighted moving average) and proposes
/// `rate × target`, held to `target / p90(cost per key of the last 20 batches)` so that the tail
/// of batch durations meets the target, clamped to `min`…`max`, growing at most ×2 per step. An overshoot (a batch
/// longer than the target by more than `tolerance`) shrinks the size at once in proportion; a
/// statement timeout halves it.
public struct BatchSizer: Sendable, Hashable {
    public let minSize: Int
    public let maxSize: Int
    public private(set) var targetMs: Double
    /// Weight of the newest measurement in the moving average.
    public let smoothing: Double
    /// How far over the target a batch may run before the size drops at once (1.25 = 25 %).
    public let tolerance: Double
    /// The size the next batch should walk.
    public private(set) var size: Int
    /// The smoothed rate in keys per millisecond, nil before the first measurement.
    public private(set) var rate: Double?
    /// The keys and cost per key (ms) of the last `window` batches, to aim their 90th percentile
    /// at the target: the size is also held to `target / p90(cost per key)`, so that the tail of
    /// batch durations (how long row locks are held) meets the target, not just their mean. Only
    /// batches of at least half the current size count: a batch's fixed cost (its round trips,
    /// the commit) weighs on each key of a small batch, so the first batches of a run (1,000 keys
    /// and doubling) would otherwise hold the size below the target for `window` batches.
    public private(set) var recentCosts: [KeyCost] = []
    public struct KeyCost: Sendable, Hashable {
        public var keys: Int
        public var cost: Double
    }
    public let window = 20
    /// Batches left during which growth is held to `calmGrowth` after live traffic waited.
    public private(set) var recoveringBatches = 0
    /// The growth per step while recovering (the usual cap is ×2).
    public let calmGrowth = 1.25
    /// How many batches growth stays calm after a shrink for live traffic.
    public let recoveryLength = 10

    public init(initial: Int, min: Int, max: Int, targetMs: Int, smoothing: Double = 0.3, tolerance: Double = 1.25) {
        self.minSize = min
        self.maxSize = max
        self.targetMs = Double(targetMs)
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.size = Swift.min(Swift.max(initial, min), max)
    }

    /// Aims the next batches at a new target (a live override): the size follows from the rate
    /// measured so far at once, within `min`…`max`.
    public mutating func retarget(targetMs: Int) {
        guard Double(targetMs) != self.targetMs else { return }
        self.targetMs = Double(targetMs)
        if let rate { size = Swift.min(Swift.max(Int((rate * self.targetMs).rounded()), minSize), maxSize) }
    }

    /// Records a committed batch that walked `keys` keys in `durationMs`.
    public mutating func record(keys: Int, durationMs: Double) {
        guard keys > 0, durationMs > 0 else { return }
        let measured = Double(keys) / durationMs
        let smoothed = rate.map { smoothing * measured + (1 - smoothing) * $0 } ?? measured
        rate = smoothed
        var next = smoothed * targetMs
        if durationMs > targetMs * tolerance {
            // Overshoot: never let the next batch be longer than this one's rate says it would.
            next = Swift.min(next, measured * targetMs)
        }
        recentCosts.append(KeyCost(keys: keys, cost: durationMs / Double(keys)))
        if recentCosts.count > window { recentCosts.removeFirst(recentCosts.count - window) }
        let comparable = recentCosts.filter { 2 * $0.keys >= size }.map(\.cost)
        if comparable.count >= 5 {
            let sorted = comparable.sorted()
            let p90 = sorted[min(sorted.count - 1, Int((0.9 * Double(sorted.count)).rounded(.up)) - 1)]
            next = Swift.min(next, targetMs / p90)
        }
        let growth = recoveringBatches > 0 ? calmGrowth : 2
        if recoveringBatches > 0 { recoveringBatches -= 1 }
        next = Swift.min(next, Double(size) * growth)
        size = clamp(next)
    }

    /// A statement timeout: the batch was far too large for the current conditions.
    public mutating func halve() {
        size = clamp(Double(size) / 2)
        rate = rate.map { $0 / 2 }
    }

    /// Live traffic waited on the job: shrink by `factor` (0…1), forget the rate's optimism, and
    /// grow back gently (at most ×1.25 a step) for the next `recoveryLength` batches.
    public mutating func shrink(by factor: Double) {
        size = clamp(Double(size) * factor)
        rate = rate.map { $0 * factor }
        recoveringBatches = recoveryLength
    }

    private func clamp(_ value: Double) -> Int {
        Swift.min(Swift.max(Int(value.rounded()), minSize), maxSize)
    }
}
