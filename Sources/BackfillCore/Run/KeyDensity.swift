/// Whether a worker's next batch finds its upper key by arithmetic (`BatchStatements.spanBound`:
/// one descent of the key's index) or by counting B keys through it (`upperBound`: B index
/// entries, a tenth of a batch's time when its heap pages are not all-visible). Pure.
///
/// Only for a key of one integer column. The span `(last, last + B]` holds at most B keys, so
/// a span batch never walks more keys than asked for; it walks fewer where the key has gaps. So
/// the span is used only while the key, as last counted, is dense: at least `denseEnough` keys
/// per integer of the span. The count is taken again every `recountEvery` batches, and at once
/// after a span that held no key (a gap wider than B, or the range's end).
public struct KeyDensity: Sendable, Hashable {
    /// Keys per integer of the span, at or above which the span is used.
    public static let denseEnough = 0.9
    /// Span batches between two counted ones.
    public static let recountEvery = 16

    /// Keys per integer of the last counted batch's span; nil before the first count or after an
    /// empty span.
    public private(set) var density: Double?
    private var spansSinceCount = 0

    public init() {}

    /// Whether the next batch (one that has a checkpoint to start from) uses the span.
    public var bySpan: Bool {
        guard let density else { return false }
        return density >= Self.denseEnough && spansSinceCount < Self.recountEvery
    }

    /// A batch that counted its keys: `keys` keys from after `lower` up to `upper` inclusive.
    public mutating func counted(keys: Int, lower: Int64, upper: Int64) {
        guard upper > lower, keys > 0 else { return }
        density = min(1, Double(keys) / (Double(upper) - Double(lower)))
        spansSinceCount = 0
    }

    /// A batch that took its upper key from the span.
    public mutating func spanned() { spansSinceCount += 1 }

    /// A span that held no key: count the next batch.
    public mutating func emptySpan() { density = nil }
}
