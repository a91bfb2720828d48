import Foundation

/// An operator's duration that cannot be used, with how to write it instead.
public struct DurationError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
}

/// Parses an operator's duration (`90s`, `10m`, `2h`, `1h30m`, `500ms`, `1d`) into seconds.
///
/// Every number needs its unit: a bare `3` is refused rather than guessed (seconds? minutes?),
/// and so are zero and negative durations.
public func parseDuration(_ text: String) throws(DurationError) -> Double {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let examples = "write it with a unit: 90s, 10m, 2h, 1h30m or 500ms"
    if Double(trimmed) != nil {
        throw DurationError(description: "`\(trimmed)` has no unit; \(examples)")
    }
    var rest = Substring(trimmed.lowercased())
    var total = 0.0
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let value = Double(number) else {
            throw DurationError(description: "`\(text)` is not a duration; \(examples)")
        }
        rest = rest.dropFirst(number.count)
        guard let unit = units.first(where: { rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms")) }) else {
            throw DurationError(description: "`\(text)` has a number without a unit (ms, s, m, h, d); \(examples)")
        }
        rest = rest.dropFirst(unit.0.count)
        total += value * unit.1
    }
    guard total > 0 else { throw DurationError(description: "`\(text)` is not a positive duration; \(examples)") }
    return total
}
