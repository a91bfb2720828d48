import Foundation

/// Live overrides of a job's pace, set with `backfill tune` and kept in the job's row: running
/// workers read them with their next claim. A nil field keeps the job file's value.
public struct Tuning: Sendable, Hashable, Codable {
    /// Overrides `throttle.max_rows_per_second` (0 = unlimited).
    public var maxRowsPerSecond: Int?
    /// Overrides `batch.target_ms`.
    public var targetMs: Int?
    /// Overrides `batch.pause_ms`.
    public var pauseMs: Int?
    /// Overrides the number of workers: the next run starts this many; a running process stops
    /// its workers numbered at or above it after their batch.
    public var workers: Int?
    /// Who set them (user@host) and when.
    public var by: String?
    public var at: Date?

    public init(maxRowsPerSecond: Int? = nil, targetMs: Int? = nil, pauseMs: Int? = nil, workers: Int? = nil, by: String? = nil, at: Date? = nil) {
        self.maxRowsPerSecond = maxRowsPerSecond
        self.targetMs = targetMs
        self.pauseMs = pauseMs
        self.workers = workers
        self.by = by
        self.at = at
    }

    enum CodingKeys: String, CodingKey {
        case maxRowsPerSecond = "max_rows_per_second", targetMs = "target_ms", pauseMs = "pause_ms", workers, by, at
    }

    /// Whether no value is overridden.
    public var isEmpty: Bool { maxRowsPerSecond == nil && targetMs == nil && pauseMs == nil && workers == nil }

    /// The bounds of each override: the job file's own (`throttle.max_rows_per_second`,
    /// `batch.target_ms`, `batch.pause_ms`, `workers`).
    public static let bounds: [(flag: String, field: String, range: ClosedRange<Int>)] = [
        ("--max-rows-per-second", "throttle.max_rows_per_second", 0...1_000_000_000),
        ("--target-ms", "batch.target_ms", 1...600_000),
        ("--pause-ms", "batch.pause_ms", 0...3_600_000),
        ("--workers", "workers", 1...1024),
    ]

    /// What is wrong with the overrides, one line per problem (empty when they are valid).
    public var problems: [String] {
        zip([maxRowsPerSecond, targetMs, pauseMs, workers], Self.bounds).compactMap { value, bound in
            guard let value, !bound.range.contains(value) else { return nil }
            return "\(bound.flag) \(value) is out of range: use \(bound.range.lowerBound) to \(bound.range.upperBound), as for `\(bound.field)` in a job file"
        }
    }

    /// The overrides for people: `max_rows_per_second=10000, workers=2 by ann@db1 at …`.
    public var summary: String {
        let values = zip([maxRowsPerSecond, targetMs, pauseMs, workers], Self.bounds).compactMap { value, bound in
            value.map { "\(bound.field.split(separator: ".").last!)=\($0)" }
        }
        return values.joined(separator: ", ") + (by.map { " by \($0)" } ?? "") + (at.map { " at \(RunEvent.timestamp($0))" } ?? "")
    }

    /// The spec with the overrides applied (what a worker runs with).
    public func applied(to spec: JobSpec) -> JobSpec {
        var spec = spec
        if let maxRowsPerSecond { spec.throttle.maxRowsPerSecond = maxRowsPerSecond }
        if let targetMs { spec.batch.targetMs = targetMs }
        if let pauseMs { spec.batch.pauseMs = pauseMs }
        if let workers { spec.workers = workers }
        return spec
    }
}
