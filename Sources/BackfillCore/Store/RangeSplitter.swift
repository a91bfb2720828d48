/// Splits a job's key space into ranges from the key's own distribution. Pure.
public enum RangeSplitter {
    /// Enough ranges that each is a few minutes of one worker's work (taken as 10 million rows),
    /// and at least four per worker so that workers added later with `--join` find free ranges;
    /// at most 1,024.
    public static func rangeCount(estimatedRows: Int64?, workers: Int) -> Int {
        let bySize = Int(((estimatedRows ?? 0) + 9_999_999) / 10_000_000)
        return min(max(4 * max(workers, 1), bySize, 1), 1024)
    }

    /// The sample percentage (of pages) that yields about 20,000 keys; 100 for small tables.
    public static func samplePercent(estimatedRows: Int64?) -> Double {
        guard let rows = estimatedRows, rows > 40_000 else { return 100 }
        return min(100, 20_000 / Double(rows) * 100)
    }

    /// `count − 1` boundaries taken at even quantiles of a key-ordered sample, without repeats
    /// (skewed keys give fewer, never empty ranges). Range i holds the keys in
    /// (boundary[i−1], boundary[i]]; the first starts at the table's start, the last is open-ended.
    public static func boundaries(sample: [[String]], count: Int) -> [[String]] {
        guard count > 1, sample.count >= count else { return count > 1 && sample.count > 1 ? Array(sample.dropLast().prefix(count - 1)) : [] }
        var result: [[String]] = []
        for i in 1..<count {
            let key = sample[i * sample.count / count]
            if result.last != key { result.append(key) }
        }
        return result
    }
}
