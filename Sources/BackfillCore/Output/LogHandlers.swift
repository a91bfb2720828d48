import Foundation
import Logging

/// Turns run events into swift-log records: the event name is the message, its fields the
/// metadata (numbers stay numbers), so any log handler can take them.
public struct EventLogger: Sendable {
    public let logger: Logger
    /// Log only the events that have a line for people (`ConsoleFormat`), with that line as the
    /// message; otherwise log every event.
    public let peopleOnly: Bool

    public init(logger: Logger, peopleOnly: Bool) {
        self.logger = logger
        self.peopleOnly = peopleOnly
    }

    public func log(_ event: RunEvent) {
        let line = ConsoleFormat.line(event)
        if peopleOnly && line == nil { return }
        var metadata: Logger.Metadata = ["event": .string(event.kind.rawValue), "job": .string(event.job)]
        if let target = event.target { metadata["target"] = .string(target) }
        for (name, value) in event.fields { metadata[name] = Self.metadata(value) }
        let level: Logger.Level = switch event.body {
        case .error: .error
        case .retry, .throttle: .notice
        case .cdc(.warning): .warning
        default: .info
        }
        logger.log(level: level, "\(line ?? event.kind.rawValue)", metadata: metadata)
    }

    static func metadata(_ value: RunEvent.Value) -> Logger.MetadataValue {
        switch value {
        case .string(let s): .string(s)
        case .int(let i): .stringConvertible(i)
        case .double(let d): .stringConvertible(d)
        case .bool(let b): .stringConvertible(b)
        case .strings(let list): .array(list.map { .string($0) })
        case .null: .string("null")
        }
    }
}

/// A swift-log handler that writes one JSON object per record on stderr:
/// `{"ts":…,"level":"info","event":"batch","job":…,…fields}`. Numbers and booleans stay JSON
/// numbers and booleans; metadata order is `event`, `job`, `target` (a fleet run's), then the rest by name.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let write: @Sendable (String) -> Void

    public init(label: String, write: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) {
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        for (k, v) in event.metadata ?? [:] { all[k] = v }
        var parts = ["\"ts\":\(RunEvent.json(.string(RunEvent.timestamp(Date()))))", "\"level\":\"\(event.level.rawValue)\""]
        if all["event"] == nil { parts.append("\"message\":\(RunEvent.json(.string(event.message.description)))") }
        let first = ["event", "job", "target"]
        let ordered = first.filter { all[$0] != nil } + all.keys.filter { !first.contains($0) }.sorted()
        for key in ordered { parts.append("\(RunEvent.json(.string(key))):\(Self.json(all[key]!))") }
        write("{" + parts.joined(separator: ",") + "}")
    }

    static func json(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): return s == "null" ? "null" : RunEvent.json(.string(s))
        case .stringConvertible(let c):
            switch c {
            case let i as Int64: return String(i)
            case let i as Int: return String(i)
            case let d as Double: return RunEvent.json(.double(d))
            case let b as Bool: return b ? "true" : "false"
            default: return RunEvent.json(.string(c.description))
            }
        case .array(let list): return "[" + list.map(json).joined(separator: ",") + "]"
        case .dictionary(let dict): return "{" + dict.keys.sorted().map { "\(RunEvent.json(.string($0))):\(json(dict[$0]!))" }.joined(separator: ",") + "}"
        }
    }
}

/// A swift-log handler for people: the message alone (for run events, the line `ConsoleFormat`
/// made), written by `write`.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let write: @Sendable (String) -> Void

    public init(label: String, write: @escaping @Sendable (String) -> Void) {
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        write(event.message.description)
    }
}
