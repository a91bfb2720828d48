/// Parses an operator's duration (`90s`, `10m`, `2h`, `1h30m`, `500ms`, or plain seconds) into
/// seconds; nil when it does not parse or is not positive.
public func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    var rest = Substring(text.trimmingCharacters(in: .whitespaces).lowercased())
    if let plain = Double(rest) { return plain > 0 ? plain : nil }
    var total = 0.0
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let value = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        guard let unit = units.first(where: { rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms")) }) else { return nil }
        rest = rest.dropFirst(unit.0.count)
        total += value * unit.1
    }
    return total > 0 ? total : nil
}

import Foundation
