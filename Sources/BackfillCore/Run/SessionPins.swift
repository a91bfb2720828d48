/// Settings pinned with `SET LOCAL` in every transaction that reads or writes checkpointed keys,
/// so that a key read back as text is the same value whatever the environment, the role or the
/// database sets (`DateStyle`, `IntervalStyle`, float digits). `client_encoding` is pinned to
/// UTF-8 on every connection (`Connection`).
enum SessionPins {
    static let settings = ["DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'", "extra_float_digits = 3"]

    /// `SET LOCAL …; SET LOCAL …` for the start of a transaction.
    static var statements: String { settings.map { "SET LOCAL \($0)" }.joined(separator: "; ") }

    /// Settings written `name = value` or `name = 'value'` as one statement that sets them all for
    /// the transaction, as `SET LOCAL` would: `SELECT set_config('name', 'value', true), …`. One
    /// statement instead of one per setting keeps the batch's first round trip short.
    static func setLocal(_ settings: [String]) -> String {
        let calls = settings.map { setting -> String in
            let parts = setting.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            var value = parts.count == 2 ? parts[1] : ""
            if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") { value = String(value.dropFirst().dropLast()) }
            return "set_config(\(literal(parts[0])), \(literal(value)), true)"
        }
        return "SELECT " + calls.joined(separator: ", ")
    }

    /// A string literal of Backfill's own setting names and values (no backslashes in them).
    private static func literal(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
}
