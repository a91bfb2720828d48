import PostgresClient

/// The counts of the end check and `verify`: how many rows still match `where`.
extension BatchStatements {
    /// A range of heap pages, `ctid >= $a::tid AND ctid < $b::tid` (`Slots.pageStart`,
    /// `Slots.pageEnd`): a TID Range Scan on PostgreSQL 14 and later.
    static let pageRange: SQL = "ctid >= \(Slots.pageStart)::tid AND ctid < \(Slots.pageEnd)::tid"

    /// `(key) > (lower) AND (key) <= (upper)` for an interval, its bounds' placeholders the slots
    /// `name.lower` and `name.upper` (`slots`: those of the bounds it has, in that order, as
    /// `KeyInterval.parameters` gives their values); `true` for an interval with neither bound.
    func condition(_ interval: KeyInterval, name: String) -> (sql: SQL, slots: [SQL.Slot]) {
        let lower = interval.lower.map { _ in SQL.Slot.list("\(name).lower", count: key.count) }
        let upper = interval.upper.map { _ in SQL.Slot.list("\(name).upper", count: key.count) }
        let parts = Self.bounds(key, after: lower.map { Self.parameters(key, $0) }, upTo: upper.map { Self.parameters(key, $0) })
        return (parts.isEmpty ? "true" : parts.joined(separator: " AND "), (lower ?? []) + (upper ?? []))
    }

    /// Which rows a remaining count reads: all, those outside some key intervals (the part of the
    /// end check that can run while the intervals are still being walked), or those inside one
    /// (read through the key's index).
    public enum RemainingScope: Sendable {
        case all
        case outside([KeyInterval])
        case within(KeyInterval)

        /// The intervals' bounds, the parameters after the limit and the job.
        public var parameters: [PostgresValue] {
            switch self {
            case .all: []
            case .outside(let intervals): KeyInterval.parameters(intervals)
            case .within(let interval): KeyInterval.parameters([interval])
            }
        }
    }

    /// How many rows still match `where` (at most `Slots.limit`, `$1`), leaving out the keys that
    /// the job (`$2`, bound) quarantined in `badRows` (their text forms read back as the key's
    /// types), within `scope` (its bounds from `$3`, bound). With `pages`, only the rows of a
    /// range of heap pages, its `tid` bounds the two parameters after the scope's (`pageRange`'s
    /// slots, bound by `ChunkedCount`). With `byPage` (a physical walk's end check, over a page
    /// range), one row per heap page that holds such rows: `page` and its rows `n`.
    public func remainingCount(spec: JobSpec, excludingBadRowsIn badRows: String, scope: RemainingScope = .all, pages: Bool = false, byPage: Bool = false) -> SQL? {
        guard let whereClause = spec.whereClause else { return nil }
        let columns = key.map { "\(table).\(Identifier.quote($0.name))" }
        let stored = key.enumerated().map { i, column in "(b.key ->> \(i))::\(column.type)" }
        let match = key.count == 1 ? "\(columns[0]) = \(stored[0])" : "(\(columns.joined(separator: ", "))) = (\(stored.joined(separator: ", ")))"
        var bounds: SQL = ""
        var scopeSlots: [SQL.Slot] = []
        switch scope {
        case .all: break
        case .outside(let intervals):
            let walking = intervals.enumerated().map { i, interval in condition(interval, name: "scope\(i)") }
            scopeSlots = walking.flatMap(\.slots)
            let each: [SQL] = walking.map { "(\($0.sql))" }
            if !walking.isEmpty { bounds = "NOT (\(each.joined(separator: " OR "))) AND " }
        case .within(let interval):
            let condition = condition(interval, name: "scope0")
            scopeSlots = condition.slots
            bounds = "\(condition.sql) AND "
        }
        if pages { bounds = "\(Self.pageRange) AND \(bounds)" }
        var sql = SQL(declaring: [Slots.limit, Slots.job] + scopeSlots + (pages ? [Slots.pageStart, Slots.pageEnd] : []))
        sql += (byPage ? "SELECT (s.ctid::text::point)[0]::bigint AS page, count(*) AS n FROM (SELECT ctid" : "SELECT count(*) AS n FROM (SELECT 1")
            + " FROM \(unescaped: table) WHERE \(bounds)(\(unescaped: whereClause)) "
            + "AND NOT EXISTS (SELECT 1 FROM \(unescaped: badRows) b WHERE b.job = \(Slots.job) AND \(unescaped: match)) LIMIT \(Slots.limit)) s"
            + (byPage ? " GROUP BY 1" : "")
        return sql.binding(Slots.job, to: .text(spec.name)).binding(scopeSlots, to: scope.parameters)
    }
}

/// A stretch of the key space: after `lower` (from the first key when nil) up to and including
/// `upper` (to the last key when nil), as a range of the checkpoint store describes it.
public struct KeyInterval: Sendable, Hashable {
    public var lower: [String]?
    public var upper: [String]?

    public init(lower: [String]?, upper: [String]?) {
        self.lower = lower
        self.upper = upper
    }

    /// The bound parameters of intervals, in the order `BatchStatements.condition` numbers them.
    public static func parameters(_ intervals: [KeyInterval]) -> [PostgresValue] {
        intervals.flatMap { ($0.lower ?? []) + ($0.upper ?? []) }.map(PostgresValue.text)
    }
}
