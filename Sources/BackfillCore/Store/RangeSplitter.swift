/// Splits a job's key space into ranges from the key's own distribution. Pure.
public enum RangeSplitter {
    /// Enough ranges that each is a few minutes of one worker's work (taken as 10 million rows),
    /// and at least four per worker so that workers added later with `--join` find free ranges;
    /// at most 1,024.
    public static func rangeCount(estimatedRows: Int64?, workers: Int) -> Int {
        let bySize = Int(((estimatedRows ?? 0) + 9_999_999) / 10_000_000)
        return min(max(4 * max(workers, 1), bySize, 1), 1024)
    }

    /// A physical walk's range ends, from page 0 to `pages` (both included, ascending): at least
    /// 4 ranges a worker, at most 1,024, none smaller than `minimumPages` (so that a range is at
    /// least one batch at the largest size), at least one (empty for an empty table).
    public static func pageBounds(pages: Int64, workers: Int, minimumPages: Int64) -> [Int64] {
        let wanted = Int64(min(4 * max(workers, 1), 1024))
        let count = max(1, min(wanted, pages / max(minimumPages, 1)))
        return (0...count).map { pages * $0 / count }
    }

    /// A catch-up pass's page ranges: the pages that hold rows still matching `where`, sorted and
    /// merged into runs `[first, end)` wherever fewer than `gap` pages lie between two of them:
    /// reading 128 pages with nothing to change (1 MB, about a millisecond) costs less than
    /// another batch transaction (a 1M-row table under 4 live writers left 1,854 rows behind the
    /// walk; merged within 8 pages they took 170 batches and 0.6 s).
    public static func pageRuns(_ pages: [Int64], gap: Int64 = 128) -> [(first: Int64, end: Int64)] {
        var runs: [(first: Int64, end: Int64)] = []
        for page in Set(pages).sorted() {
            if let last = runs.last, page - last.end < gap {
                runs[runs.count - 1].end = page + 1
            } else {
                runs.append((page, page + 1))
            }
        }
        return runs
    }

    /// The sample percentage (of pages) that yields about 20,000 keys, and never more than 500
    /// pages (at most about 145,000 keys, whatever the statistics say: a table that was never
    /// analyzed, or grew since, is not read whole); 100 for small tables.
    public static func samplePercent(estimatedRows: Int64?, pages: Int64) -> Double {
        let byRows = estimatedRows.map { $0 > 40_000 ? 20_000 / Double($0) * 100 : 100 } ?? 100
        let byPages = pages > 500 ? 500 / Double(pages) * 100 : 100
        return min(100, byRows, byPages)
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
