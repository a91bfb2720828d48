import Foundation
import Prometheus
import Synchronization

/// Publishes the process's Prometheus registry: to a file for node_exporter's textfile collector
/// (written atomically, by write-then-rename, every `interval` and at `stop()`), and/or over HTTP
/// at `/metrics` for Kubernetes scraping. The server answers clients concurrently (at most 32 at a
/// time), gives each request a whole-request deadline of 2 s, keeps accepting after transient
/// errors, and stops within 0.2 s: `stop()` never waits for a client.
public final class MetricsExporter: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    private let registry: PrometheusCollectorRegistry
    private let filePath: String?
    private let running = Atomic<Bool>(true)
    private let listener: Int32?
    private let finished = Atomic<Int>(0)
    private let threads: Int

    /// Seconds a client has to send its request and read the answer.
    static let requestDeadline = 2.0
    private let clients = Atomic<Int>(0)

    /// Starts exporting. Throws when the address cannot be bound or the file's folder is missing.
    /// - Parameter bindAddress: the IPv4 or IPv6 address to listen on (`0.0.0.0` by default, every
    ///   IPv4 interface; `127.0.0.1` for the host alone, `::` for every IPv6 one).
    public init(registry: PrometheusCollectorRegistry, filePath: String?, port: Int?, bindAddress: String = "0.0.0.0", interval: Double = 5) throws {
        self.registry = registry
        self.filePath = filePath
        if let filePath {
            let folder = (filePath as NSString).deletingLastPathComponent
            guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder) else {
                throw Failure(description: "--metrics-file: folder \(folder) does not exist")
            }
        }
        listener = try port.map { try Self.listen(address: bindAddress, port: $0) }
        threads = (filePath == nil ? 0 : 1) + (listener == nil ? 0 : 1)
        if filePath != nil {
            try writeFile()
            Thread.detachNewThread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                var next = Date().addingTimeInterval(interval)
                while running.load(ordering: .acquiring) {
                    usleep(50_000)
                    if Date() >= next {
                        try? writeFile()
                        next = Date().addingTimeInterval(interval)
                    }
                }
            }
        }
        if let listener {
            Thread.detachNewThread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                serve(listener)
            }
        }
    }

    /// Writes the file one last time and stops serving.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        if let listener {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
        while finished.load(ordering: .acquiring) < threads { usleep(5_000) }
        try? writeFile()
    }

    /// The current metrics in Prometheus' text format.
    public var text: String { registry.emitToString() }

    private func writeFile() throws {
        guard let filePath else { return }
        let temporary = filePath + ".tmp.\(getpid())"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, filePath) == 0 else {
            unlink(temporary)
            throw Failure(description: "could not rename \(temporary) to \(filePath): errno \(errno)")
        }
    }

    private static func listen(address: String, port: Int) throws -> Int32 {
        let v6 = address.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "--metrics-port: socket() failed: errno \(errno)") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var parsed = false
        var bound: Int32 = -1
        if v6 {
            var sa = sockaddr_in6()
            (sa.sin6_family, sa.sin6_port) = (sa_family_t(AF_INET6), in_port_t(UInt16(port).bigEndian))
            parsed = inet_pton(AF_INET6, address, &sa.sin6_addr) == 1
            if parsed { bound = bindSocket(fd, &sa) }
        } else {
            var sa = sockaddr_in()
            (sa.sin_family, sa.sin_port) = (sa_family_t(AF_INET), in_port_t(UInt16(port).bigEndian))
            parsed = inet_pton(AF_INET, address, &sa.sin_addr) == 1
            if parsed { bound = bindSocket(fd, &sa) }
        }
        guard parsed else {
            close(fd)
            throw Failure(description: "--metrics-bind \(address): not an IPv4 or IPv6 address")
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            let error = errno
            close(fd)
            throw Failure(description: "--metrics-port \(port) on \(address): cannot listen (errno \(error)\(error == EADDRINUSE ? ", the port is in use" : error == EADDRNOTAVAIL ? ", no interface has that address" : ""))")
        }
        return fd
    }

    private static func bindSocket<Address>(_ fd: Int32, _ address: inout Address) -> Int32 {
        withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) } }
    }

    /// Accepts clients until `stop()`, waking every 0.2 s to see it; each client is answered on a
    /// thread of its own. An `accept` error (a client gone before it was accepted, too many open
    /// files) is waited out, never the end of the server.
    private func serve(_ listener: Int32) {
        while running.load(ordering: .acquiring) {
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 200) > 0, running.load(ordering: .acquiring) else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                usleep(errno == EINTR || errno == EAGAIN ? 0 : 50_000)
                continue
            }
            guard clients.add(1, ordering: .acquiringAndReleasing).newValue <= 32 else {
                clients.subtract(1, ordering: .acquiringAndReleasing)
                close(client)
                continue
            }
            Thread.detachNewThread { [self] in
                defer { clients.subtract(1, ordering: .acquiringAndReleasing) }
                answer(client)
            }
        }
    }

    /// A minimal HTTP/1.0 responder: `GET /metrics` gets the registry, anything else 404. The
    /// request and the answer together must fit in `requestDeadline`; a slow client is dropped.
    private func answer(_ client: Int32) {
        defer { close(client) }
        let deadline = Date().addingTimeInterval(Self.requestDeadline)
        var request = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 2048)
        while request.count < 16_384 {
            let left = Int32(deadline.timeIntervalSinceNow * 1000)
            guard left > 0 else { return }
            var ready = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, left) > 0 else { return }
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { break }
            request += buffer[0..<n]
            if request.count >= 4, String(decoding: request.suffix(4), as: UTF8.self) == "\r\n\r\n" { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let path = line.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        let (status, body) = path == "/metrics" || path.hasPrefix("/metrics?") ? ("200 OK", text) : ("404 Not Found", "not found; try /metrics\n")
        let response = Array("HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)
        let left = max(0.001, deadline.timeIntervalSinceNow)
        var timeout = timeval(tv_sec: Int(left), tv_usec: Int((left - left.rounded(.down)) * 1_000_000))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sent = 0
        while sent < response.count, deadline.timeIntervalSinceNow > 0 {
            let n = response[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
