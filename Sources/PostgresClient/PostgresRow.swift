import Foundation

/// The rows a query returned, with column access by name.
public struct QueryResult: Sendable {
    /// Column names, in order.
    public let columns: [String]
    /// Column type OIDs, in order.
    public let columnTypes: [UInt32]
    /// The rows.
    public let rows: [PostgresRow]
    /// The number of rows a command changed (`UPDATE 42` → 42); 0 when the command reports none.
    public let affectedRows: Int64
    /// The command tag, such as `UPDATE 42`.
    public let commandTag: String

    /// The first row, if any.
    public var first: PostgresRow? { rows.first }
}

/// One row of a `QueryResult`.
public struct PostgresRow: Sendable {
    let index: [String: Int]
    /// The cells, in column order.
    public let cells: [PostgresCell]

    /// The cell of the named column. Accessing a column the query did not return is a programming
    /// error and traps.
    public subscript(_ column: String) -> PostgresCell {
        guard let i = index[column] else { preconditionFailure("no column \(column) in result (have \(index.keys.sorted()))") }
        return cells[i]
    }

    /// The cell at a position.
    public subscript(_ position: Int) -> PostgresCell { cells[position] }
}

/// One value of a row in PostgreSQL's text form, with typed accessors that return nil for NULL
/// or for text that is not of the asked type.
public struct PostgresCell: Sendable, Hashable, CustomStringConvertible {
    /// The value in PostgreSQL's text output form, or nil for NULL.
    public let text: String?
    /// The type OID of the column.
    public let typeOID: UInt32

    public init(text: String?, typeOID: UInt32) {
        self.text = text
        self.typeOID = typeOID
    }

    public var isNull: Bool { text == nil }
    public var string: String? { text }
    public var int64: Int64? { text.flatMap { Int64($0) } }
    public var int: Int? { text.flatMap { Int($0) } }
    public var double: Double? {
        guard let text else { return nil }
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default: return Double(text)
        }
    }
    public var bool: Bool? {
        switch text {
        case "t", "true": return true
        case "f", "false": return false
        default: return nil
        }
    }
    public var date: Date? { text.flatMap(PostgresTimestamp.parse) }

    public var description: String { text ?? "NULL" }
}
