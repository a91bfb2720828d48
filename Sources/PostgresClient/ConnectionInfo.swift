import CLibPQ
import Foundation

/// Describes a connection string for people: which server and database, never the password.
public struct ConnectionInfo: Sendable {
    /// `host=… port=… dbname=… user=…` for the effective settings.
    public let target: String
    /// Strings that must never appear in output (the password, the full connection string).
    public let secrets: [String]

    init(conn: OpaquePointer?, conninfo: String?) {
        var parts: [String] = []
        var secrets: [String] = []
        if let conn {
            for (key, getter) in [("host", PQhost), ("port", PQport), ("dbname", PQdb), ("user", PQuser)] as [(String, (OpaquePointer?) -> UnsafeMutablePointer<CChar>?)] {
                if let value = getter(conn).map({ String(cString: $0) }), !value.isEmpty {
                    parts.append("\(key)=\(value)")
                }
            }
            if let password = PQpass(conn).map({ String(cString: $0) }), !password.isEmpty {
                secrets.append(password)
            }
        }
        if let conninfo, !conninfo.isEmpty {
            secrets.append(conninfo)
            if let password = Self.parse(conninfo)["password"], !password.isEmpty { secrets.append(password) }
        }
        self.target = parts.isEmpty ? Self.describe(conninfo) : parts.joined(separator: " ")
        self.secrets = secrets
    }

    /// A connection string's settings as libpq reads them (URL or `key=value`), or an empty
    /// dictionary when it does not parse.
    public static func parse(_ conninfo: String) -> [String: String] {
        var errmsg: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errmsg) else {
            if let errmsg { PQfreemem(errmsg) }
            return [:]
        }
        defer { PQconninfoFree(options) }
        var result: [String: String] = [:]
        var p = options
        while let keyword = p.pointee.keyword {
            if let value = p.pointee.val { result[String(cString: keyword)] = String(cString: value) }
            p += 1
        }
        return result
    }

    /// The connection string with its password removed, fit for logs and error messages.
    public static func describe(_ conninfo: String?) -> String {
        guard let conninfo, !conninfo.isEmpty else { return "the default server (PG* environment variables)" }
        let settings = parse(conninfo)
        if settings.isEmpty { return "(an unparsable connection string)" }
        return ["host", "port", "dbname", "user"].compactMap { key in settings[key].map { "\(key)=\($0)" } }
            .joined(separator: " ")
    }

    /// Replaces every secret in `text` with `********`.
    public static func redact(_ text: String, secrets: [String]) -> String {
        secrets.filter { !$0.isEmpty }.sorted { $0.count > $1.count }.reduce(text) {
            $0.replacingOccurrences(of: $1, with: "********")
        }
    }
}
