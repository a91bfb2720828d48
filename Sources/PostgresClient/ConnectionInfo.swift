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
            secrets += Self.likelySecrets(in: conninfo)
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

    /// Replaces every secret in `text` with `********`, then scrubs whatever still looks like a
    /// password (`scrub`).
    public static func redact(_ text: String, secrets: [String]) -> String {
        scrub(secrets.filter { !$0.isEmpty }.sorted { $0.count > $1.count }.reduce(text) {
            $0.replacingOccurrences(of: $1, with: "********")
        })
    }

    /// Removes passwords from any text: the `password` of a URL's `user:password@` and the value
    /// of `password=` settings. The last line of defence for messages, logs, events and the
    /// store's `last_error`.
    public static func scrub(_ text: String) -> String {
        guard text.contains("@") || text.lowercased().contains("password") else { return text }
        var result = text.replacing(#/(?<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'"]*):[^@\s]*@/#) { "\($0.output.head):********@" }
        result = result.replacing(#/(?i)(?<head>password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'"]+)/#) { "\($0.output.head)********" }
        return result
    }

    /// Why a connection string cannot be used, for people, without quoting any part of it (libpq's
    /// own parse errors echo the text, password included); nil when libpq can read it.
    public static func problem(in conninfo: String) -> String? {
        if conninfo.firstMatch(of: #/^[A-Za-z][A-Za-z0-9.\-]*\+[A-Za-z0-9.\-]+:\/\//#) != nil {
            return "is an SQLAlchemy-style URL (`postgresql+driver://…`), which libpq does not read: drop the `+driver` part (`postgresql://user:password@host:port/dbname`)"
        }
        var errmsg: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errmsg) else {
            if let errmsg { PQfreemem(errmsg) }
            if conninfo.firstMatch(of: #/%(?![0-9A-Fa-f]{2})/#) != nil, conninfo.contains("://") {
                return "has a `%` that does not start a percent-encoded byte: percent-encode special characters in the user name and password (`%` is `%25`, `@` is `%40`, `:` is `%3A`, `/` is `%2F`)"
            }
            return "cannot be read as a URL (`postgresql://user:password@host:port/dbname`) or as settings (`host=… port=… dbname=… user=…`)"
        }
        PQconninfoFree(options)
        if let port = parse(conninfo)["port"], !port.isEmpty, !port.split(separator: ",").allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) {
            return "has a port that is not a number; in a URL with a password the host comes after `@`: `postgresql://user:password@host:port/dbname`"
        }
        return nil
    }

    /// Parts of a connection string that may be a password even where libpq would not read
    /// them as one: the password setting, a URL's `:password@`, and a non-numeric "port" of a
    /// URL that lost its `@host` (`postgresql://bob:secret`).
    static func likelySecrets(in conninfo: String) -> [String] {
        var found: [String] = []
        if let password = parse(conninfo)["password"], !password.isEmpty { found.append(password) }
        if let match = conninfo.firstMatch(of: #/^[A-Za-z][A-Za-z0-9+.\-]*://(?<authority>[^/?#]*)/#) {
            let authority = String(match.output.authority)
            let userinfo = authority.lastIndex(of: "@").map { String(authority[..<$0]) }
            if let userinfo, let colon = userinfo.firstIndex(of: ":") {
                found.append(String(userinfo[userinfo.index(after: colon)...]))
            } else if userinfo == nil, let colon = authority.lastIndex(of: ":") {
                let port = String(authority[authority.index(after: colon)...])
                if !port.allSatisfy(\.isNumber) { found.append(port) }
            }
        }
        return found.filter { !$0.isEmpty } + found.compactMap { $0.removingPercentEncoding }.filter { !$0.isEmpty }
    }
}
