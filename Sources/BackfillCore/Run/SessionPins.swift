/// Settings pinned with `SET LOCAL` in every transaction that reads or writes checkpointed keys,
/// so that a key read back as text is the same value whatever the environment, the role or the
/// database sets (`DateStyle`, `IntervalStyle`, float digits). `client_encoding` is pinned to
/// UTF-8 on every connection (`Connection`).
enum SessionPins {
    static let settings = ["DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'", "extra_float_digits = 3"]

    /// `SET LOCAL …; SET LOCAL …` for the start of a transaction.
    static var statements: String { settings.map { "SET LOCAL \($0)" }.joined(separator: "; ") }
}
