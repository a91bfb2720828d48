/// SQL text and its parameters, built by string interpolation as postgres-nio's `PostgresQuery`
/// is: the builder numbers the placeholders, so nobody writes `$\(n + 3)` by hand.
///
/// ```swift
/// let update: SQL = "UPDATE \(qualified: ["public", "t"]) SET v = \(bind: value)::jsonb WHERE \(identifier: "id") = \(bind: id)"
/// // UPDATE "public"."t" SET v = $1::jsonb WHERE "id" = $2, with [value, id]
/// ```
///
/// - `\(bind: value)` sends `value` as the next parameter and writes its `$n`; a value is never
///   spliced into the text. Casts stay in the text: `\(bind: key)::jsonb`.
/// - `\(slot)` writes the placeholder of a `Slot`, a parameter whose value is given later
///   (`binding(_:)`), for statements built once and run many times with new values. A slot used
///   twice is one placeholder.
/// - `\(identifier: name)` and `\(qualified: parts)` write quoted identifiers (`Identifier.quote`);
///   `\(unescaped: text)` writes trusted text as it is (SQL the code made, operator SQL checked by
///   the planner).
/// - `\(other)` appends another `SQL`, its placeholders renumbered after this one's (a slot of
///   both is one placeholder), so that statements compose without parameter offsets.
///
/// Only literal text, quoted identifiers and explicitly unescaped text reach the SQL: there is no
/// interpolation of an arbitrary value.
public struct SQL: Sendable, Hashable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// A parameter whose value is given when the statement runs rather than when it is built:
    /// `Slot("lower", 1)` is the second value of the lower key. Slots are told apart by name and
    /// index only.
    public struct Slot: Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var index: Int

        public init(_ name: String, _ index: Int = 0) {
            self.name = name
            self.index = index
        }

        /// `count` slots of one name, for the values of a key of `count` columns.
        public static func list(_ name: String, count: Int) -> [Slot] {
            (0..<count).map { Slot(name, $0) }
        }

        public var description: String { index == 0 ? name : "\(name)[\(index)]" }
    }

    /// One parameter of the statement: a value, or a slot not bound yet.
    public enum Parameter: Sendable, Hashable {
        case value(PostgresValue)
        case slot(Slot)
    }

    /// A run of text, or the placeholder of `parameters[index]`.
    enum Piece: Sendable, Hashable {
        case text(String)
        case parameter(Int)
    }

    /// The text, with placeholders `$1`, `$2` … in the order of `parameters`.
    public private(set) var text = ""
    /// The parameters, `$1` first.
    public private(set) var parameters: [Parameter] = []
    private var pieces: [Piece] = []

    public init() {}

    /// Trusted text as it is: SQL the code made, or operator SQL the planner checks.
    public init(unescaped text: String) {
        appendText(text)
    }

    public init(stringLiteral value: String) {
        appendText(value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self = stringInterpolation.sql
    }

    /// SQL whose first placeholders are those of `slots`, in this order, whatever order the text
    /// then uses them in: for a statement whose callers know its parameters' order (the key's
    /// lower bound, then its ceiling, then an offset). Every slot must appear in the text.
    public init(declaring slots: [Slot]) {
        for slot in slots where placeholder(of: slot) == nil { parameters.append(.slot(slot)) }
    }

    public var description: String { text }

    /// The slots that have no value yet, in placeholder order.
    public var slots: [Slot] {
        parameters.compactMap { if case .slot(let slot) = $0 { slot } else { nil } }
    }

    /// The parameters' values, `$1` first. Every slot must be bound (a programming error
    /// otherwise).
    public var values: [PostgresValue] {
        parameters.map { parameter in
            switch parameter {
            case .value(let value): return value
            case .slot(let slot): preconditionFailure("SQL parameter `\(slot)` has no value in: \(text)")
            }
        }
    }

    /// This SQL with values for some of its slots; slots it does not have are ignored. The text
    /// stays the same: a slot keeps its placeholder.
    public func binding(_ values: [Slot: PostgresValue]) -> SQL {
        var bound = self
        for i in bound.parameters.indices {
            if case .slot(let slot) = bound.parameters[i], let value = values[slot] { bound.parameters[i] = .value(value) }
        }
        return bound
    }

    /// This SQL with `values` for `slots`, in order (`slots` and `values` of one length).
    public func binding(_ slots: [Slot], to values: [PostgresValue]) -> SQL {
        precondition(slots.count == values.count, "\(slots.count) slots bound to \(values.count) values")
        return binding(Dictionary(zip(slots, values)) { first, _ in first })
    }

    /// This SQL with `value` for `slot`.
    public func binding(_ slot: Slot, to value: PostgresValue) -> SQL {
        binding([slot: value])
    }

    // MARK: Building

    /// Appends trusted text as it is.
    public mutating func append(unescaped text: String) {
        appendText(text)
    }

    /// Appends `value` as the next parameter and its placeholder.
    public mutating func append(bind value: PostgresValue) {
        parameters.append(.value(value))
        appendPlaceholder(parameters.count - 1)
    }

    /// Appends the placeholder of `slot`: the one it has already, or the next.
    public mutating func append(_ slot: Slot) {
        if let index = placeholder(of: slot) { return appendPlaceholder(index) }
        parameters.append(.slot(slot))
        appendPlaceholder(parameters.count - 1)
    }

    /// Appends `other`, its placeholders renumbered after this SQL's; a slot not bound in
    /// either keeps the placeholder it has here.
    public mutating func append(_ other: SQL) {
        var renumbered: [Int] = []
        renumbered.reserveCapacity(other.parameters.count)
        for parameter in other.parameters {
            if case .slot(let slot) = parameter, let index = placeholder(of: slot) {
                renumbered.append(index)
            } else {
                parameters.append(parameter)
                renumbered.append(parameters.count - 1)
            }
        }
        for piece in other.pieces {
            switch piece {
            case .text(let text): appendText(text)
            case .parameter(let index): appendPlaceholder(renumbered[index])
            }
        }
    }

    public static func + (lhs: SQL, rhs: SQL) -> SQL {
        var sum = lhs
        sum.append(rhs)
        return sum
    }

    public static func += (lhs: inout SQL, rhs: SQL) {
        lhs.append(rhs)
    }

    private func placeholder(of slot: Slot) -> Int? {
        parameters.firstIndex(of: .slot(slot))
    }

    private mutating func appendText(_ text: String) {
        guard !text.isEmpty else { return }
        self.text += text
        if case .text(let last) = pieces.last {
            pieces[pieces.count - 1] = .text(last + text)
        } else {
            pieces.append(.text(text))
        }
    }

    private mutating func appendPlaceholder(_ index: Int) {
        pieces.append(.parameter(index))
        text += "$\(index + 1)"
    }

    // MARK: Interpolation

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = SQL()

        public init(literalCapacity: Int, interpolationCount: Int) {}

        public mutating func appendLiteral(_ literal: String) {
            sql.appendText(literal)
        }

        /// Another SQL, its placeholders renumbered.
        public mutating func appendInterpolation(_ other: SQL) {
            sql.append(other)
        }

        /// The placeholder of a slot, bound later.
        public mutating func appendInterpolation(_ slot: Slot) {
            sql.append(slot)
        }

        /// A parameter: its placeholder in the text, the value beside it.
        public mutating func appendInterpolation(bind value: PostgresValue) {
            sql.append(bind: value)
        }

        public mutating func appendInterpolation(bind value: String) {
            sql.append(bind: .text(value))
        }

        public mutating func appendInterpolation(bind value: Int) {
            sql.append(bind: .int(Int64(value)))
        }

        public mutating func appendInterpolation(bind value: Int64) {
            sql.append(bind: .int(value))
        }

        /// A quoted identifier: `a"b` → `"a""b"`.
        public mutating func appendInterpolation(identifier name: String) {
            sql.appendText(Identifier.quote(name))
        }

        /// A quoted qualified name: `["public", "t"]` → `"public"."t"`.
        public mutating func appendInterpolation(qualified parts: [String]) {
            sql.appendText(Identifier.quoteQualified(parts))
        }

        /// Trusted text as it is.
        public mutating func appendInterpolation(unescaped text: String) {
            sql.appendText(text)
        }
    }
}

extension Array where Element == SQL {
    /// The SQLs one after another with `separator` between them, placeholders renumbered.
    public func joined(separator: SQL = "") -> SQL {
        var joined = SQL()
        for (i, sql) in enumerated() {
            if i > 0 { joined.append(separator) }
            joined.append(sql)
        }
        return joined
    }
}
