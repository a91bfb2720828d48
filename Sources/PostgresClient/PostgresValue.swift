import Foundation

/// A value sent as a query parameter. Parameters are always sent separately from the SQL text
/// (`PQexecParams`), never spliced into it.
public enum PostgresValue: Sendable, Hashable, CustomStringConvertible {
    case null
    case text(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case date(Date)

    /// The text form PostgreSQL accepts for this value, or nil for NULL.
    public var textEncoded: String? {
        switch self {
        case .null: return nil
        case .text(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(d) : (d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"))
        case .bool(let b): return b ? "t" : "f"
        case .date(let d): return PostgresTimestamp.format(d)
        }
    }

    public var description: String { textEncoded ?? "NULL" }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}

/// Conversion between `Date` and PostgreSQL's ISO timestamp text.
public enum PostgresTimestamp {
    /// `2026-11-21 05:03:14.123456+00`, in UTC, with microseconds.
    public static func format(_ date: Date) -> String {
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = Int64((micros / 1_000_000).rounded(.down))
        var fraction = Int64(micros) - seconds * 1_000_000
        if fraction < 0 { fraction += 1_000_000; seconds -= 1 }
        var tm = tm()
        var t = time_t(seconds)
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00",
            Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
            Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), fraction)
    }

    /// Parses `date`, `timestamp` and `timestamptz` output in the ISO DateStyle
    /// (`2026-11-21`, `2026-11-21 05:03:14.5`, `2026-11-21 05:03:14.5+05:30`). A value without an
    /// offset is read as UTC.
    public static func parse(_ text: String) -> Date? {
        let chars = Array(text.utf8)
        var i = 0
        func number(_ count: Int) -> Int? {
            guard i + count <= chars.count else { return nil }
            var v = 0
            for c in chars[i..<(i + count)] {
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += count
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < chars.count, chars[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect(45), let month = number(2), expect(45), let day = number(2) else { return nil }
        var hour = 0, minute = 0, second = 0
        var fraction = 0.0
        var offsetSeconds = 0
        if i < chars.count {
            guard expect(32) || expect(84) else { return nil }
            guard let h = number(2), expect(58), let m = number(2), expect(58), let s = number(2) else { return nil }
            (hour, minute, second) = (h, m, s)
            if expect(46) {
                var scale = 0.1
                while i < chars.count, chars[i] >= 48, chars[i] <= 57 {
                    fraction += Double(chars[i] - 48) * scale
                    scale /= 10
                    i += 1
                }
            }
            if i < chars.count {
                if expect(90) { // Z
                } else {
                    let sign: Int
                    if expect(43) { sign = 1 } else if expect(45) { sign = -1 } else { return nil }
                    guard let oh = number(2) else { return nil }
                    var om = 0, os = 0
                    if expect(58) { guard let v = number(2) else { return nil }; om = v }
                    if expect(58) { guard let v = number(2) else { return nil }; os = v }
                    offsetSeconds = sign * (oh * 3600 + om * 60 + os)
                }
            }
            guard i == chars.count else { return nil }
        }
        var tm = tm()
        tm.tm_year = Int32(year - 1900)
        tm.tm_mon = Int32(month - 1)
        tm.tm_mday = Int32(day)
        tm.tm_hour = Int32(hour)
        tm.tm_min = Int32(minute)
        tm.tm_sec = Int32(second)
        let epoch = timegm(&tm)
        return Date(timeIntervalSince1970: Double(epoch - offsetSeconds) + fraction)
    }
}
