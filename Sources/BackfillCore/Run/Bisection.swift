import PostgresClient

/// Finds the rows of a batch that cannot be written (a data error: SQLSTATE class 22 or 23) by
/// halving its key range. Pure: the worker carries out each `step` and reports how it went.
///
/// The batch's keys after `lower` up to its upper key are kept as consecutive parts, in key
/// order, each with the upper key that ends it and how many keys it holds. Only the first part
/// is ever tried, so the walk stays monotone: with `on_error: skip` each part commits with the
/// checkpoint moved to its upper key, and a part of one key that fails is that key, quarantined
/// in the same transaction that moves the checkpoint past it. With `on_error: stop` the parts are
/// tried under savepoints of one transaction that is rolled back at the end: the first part of one
/// key that fails, with everything before it applied, is the first bad key in walk order.
public struct Bisection: Sendable, Hashable {
    /// A run of consecutive keys: those after the previous part's upper key (or `lower`) up to
    /// `upper`, inclusive.
    public struct Part: Sendable, Hashable {
        public var upper: [String]
        /// How many keys it holds, as last counted (the table may change meanwhile).
        public var keys: Int
        /// It was tried as a whole and failed: split it before trying again.
        public var failed: Bool
    }

    /// What the worker does next.
    public enum Step: Sendable, Hashable {
        /// Write the keys after `lower` up to `upper` as one batch (`keys` of them). A part of
        /// one key is tried under a savepoint, so that its failure can be recorded in the same
        /// transaction.
        case attempt(lower: [String]?, upper: [String], keys: Int)
        /// Read the key `offset` keys past the first one after `lower`, at most `upper`, and how
        /// many keys there are up to it (the batch's upper-bound query): where to split.
        case split(lower: [String]?, upper: [String], offset: Int)
        /// Every key of the failed batch was written or found bad.
        case finished
    }

    /// The range the failed batch walked.
    public let range: Int
    /// Where the next part starts (exclusive): the checkpoint, or nil at the range's start.
    public private(set) var lower: [String]?
    public private(set) var parts: [Part]

    /// The batch after `lower` up to `upper` (`keys` keys) failed with a data error.
    public init(range: Int, lower: [String]?, upper: [String], keys: Int) {
        self.range = range
        self.lower = lower
        // A batch of one key is tried again alone, under a savepoint; a larger one is split.
        parts = [Part(upper: upper, keys: max(keys, 1), failed: keys > 1)]
    }

    public var step: Step {
        guard let first = parts.first else { return .finished }
        if first.failed { return .split(lower: lower, upper: first.upper, offset: first.keys / 2 - 1) }
        return .attempt(lower: lower, upper: first.upper, keys: first.keys)
    }

    /// The first part was written (committed, or kept under its savepoint): go past it.
    public mutating func written() {
        guard let first = parts.first else { return }
        lower = first.upper
        parts.removeFirst()
    }

    /// The first part failed with a data error. A part of one key is a bad key: returned, and
    /// the walk goes past it (quarantined with the checkpoint, or the search ends). A larger
    /// part is split next.
    @discardableResult
    public mutating func failed() -> [String]? {
        guard let first = parts.first else { return nil }
        if first.keys <= 1 {
            written()
            return first.upper
        }
        parts[0].failed = true
        return nil
    }

    /// Where the split query landed: `key`, with `walked` keys after `lower` up to and including
    /// it. A key before the part's upper key splits it in two, to try in order; the upper key
    /// itself means the part holds only `walked` keys (fewer than counted): a failed part of one
    /// key is then that key's failure, any other is split again. Nil (no key left in the part,
    /// its rows deleted meanwhile): the part is tried again as it is, and writes nothing.
    public mutating func split(at key: [String]?, walked: Int) {
        guard let first = parts.first else { return }
        guard let key else {
            parts[0] = Part(upper: first.upper, keys: 1, failed: false)
            return
        }
        if key == first.upper {
            parts[0].keys = max(walked, 1)
            if parts[0].keys == 1 && first.failed { parts[0].failed = false }  // one key: try it alone, under a savepoint
            return
        }
        let before = max(walked, 1)
        parts.replaceSubrange(0...0, with: [
            Part(upper: key, keys: before, failed: false),
            Part(upper: first.upper, keys: max(first.keys - before, 1), failed: false),
        ])
    }

    /// A single key tried alone found more keys before it (rows inserted meanwhile): `key` is the
    /// first of them; it is tried alone first.
    public mutating func found(first key: [String]) {
        guard let part = parts.first, key != part.upper else { return }
        parts.insert(Part(upper: key, keys: 1, failed: false), at: 0)
    }

    /// Whether the data error is one that bisection isolates: class 22 (data exception: an
    /// invalid cast, a value out of range, division by zero) or 23 (integrity constraint
    /// violation: check, unique, not-null, foreign key).
    public static func isolates(_ error: PostgresError) -> Bool {
        error.code.errorClass == "22" || error.code.errorClass == "23"
    }
}
