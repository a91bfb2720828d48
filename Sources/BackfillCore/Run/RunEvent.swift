import Foundation

/// Something that happened during a run, for the console, JSON logs and metrics.
///
/// `body` is the event as typed values, one case per event of the contract (`docs/events.md`);
/// readers switch on it. `kind` (the event's name) and `fields` (its JSON fields, in a stable
/// order) are what the body encodes to, in one place (`RunEvent+Fields.swift`).
public struct RunEvent: Sendable {
    /// The contract's event names.
    public enum Kind: String, Sendable, CaseIterable {
        case start, batch, retry, throttle, pass, stop, done, error
        /// A row that cannot be written, quarantined in the store (`on_error: skip`).
        case badRow = "bad_row"
        /// The job's `requires` is waited for (`state` `waiting`) or holds (`met`).
        case requirements
        /// A finalize step `started`, is `done` or was `skipped` (done by an earlier run).
        case finalize
        /// A worker picked up overrides set with `backfill tune`.
        case tune
        /// `backfill wait` saw the job (progress while it waits, then the outcome).
        case wait
        /// The connections a run needs against the slots it has: fewer workers started, the
        /// watchdog off, or a worker waiting for a slot (`state`).
        case connections
        /// The job's `cdc`: marks nothing will read (`state` `warning`), or a worker session set
        /// up with the job's replication origin (`state` `origin`).
        case cdc
        /// A fleet run (`run --targets`): a target not started (`state` `skipped`), and the end
        /// (`state` `done`) with every target's exit code and the fleet's.
        case fleet
        /// `backfill revert` started or ended (its batches are `batch` events with `revert: true`).
        case revert
    }

    /// A field value, as it appears in JSON.
    public enum Value: Sendable, Hashable {
        case string(String)
        case int(Int64)
        case double(Double)
        case bool(Bool)
        case strings([String])
        case null
    }

    /// What happened, one case per event (the payloads are in `RunEvent+Bodies.swift` and
    /// `RunEvent+OutcomeBodies.swift`).
    public enum Body: Sendable, Hashable {
        case start(Start)
        case batch(Batch)
        /// A `batch` event of `backfill revert` (`revert: true`).
        case revertBatch(RevertBatch)
        case retry(Retry)
        case throttle(Throttle)
        case pass(Pass)
        case badRow(BadRow)
        case stop(Stop)
        case done(Done)
        case error(Failed)
        case requirements(Requirements)
        case finalize(Finalize)
        case tune(Tune)
        case wait(Wait)
        case connections(Connections)
        case cdc(CDC)
        case fleet(Fleet)
        case revert(Revert)
    }

    public var body: Body
    public var job: String
    /// The fleet target the event is about (`run --targets`), nil for a run of one database.
    public var target: String?
    public var time: Date

    public init(_ body: Body, job: String, time: Date = Date()) {
        self.body = body
        self.job = job
        self.time = time
    }

    /// The event's name in the contract.
    public var kind: Kind { body.kind }

    /// The event's own fields as the JSON line carries them, in their stable order.
    public var fields: [(String, Value)] { body.fields }

    /// The value of a field as the JSON line carries it, if present.
    public subscript(_ name: String) -> Value? { fields.first { $0.0 == name }?.1 }

    /// One JSON object on one line: `{"ts":…,"event":"batch","job":…,…}`.
    public var jsonLine: String {
        var parts = ["\"ts\":\(Self.json(.string(Self.timestamp(time))))", "\"event\":\"\(kind.rawValue)\"", "\"job\":\(Self.json(.string(job)))"]
        if let target { parts.append("\"target\":\(Self.json(.string(target)))") }
        parts += fields.map { "\(Self.json(.string($0.0))):\(Self.json($0.1))" }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// `2026-11-21T05:03:14.123Z`.
    public static func timestamp(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), ms % 1000)
    }

    static func json(_ value: Value) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(format: "%.3f", d) : "null"
        case .strings(let list): return "[" + list.map { json(.string($0)) }.joined(separator: ",") + "]"
        case .string(let s):
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
    }
}
