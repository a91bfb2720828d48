import Foundation
import Prometheus
import Synchronization

/// Publishes the process's Prometheus registry: to a file for node_exporter's textfile collector
/// (written atomically, by write-then-rename, every `interval` and at `stop()`), and/or over HTTP
/// at `/metrics` for Kubernetes scraping.
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

    /// Starts exporting. Throws when the port cannot be bound or the file's folder is missing.
    public init(registry: PrometheusCollectorRegistry, filePath: String?, port: Int?, interval: Double = 5) throws {
        self.registry = registry
        self.filePath = filePath
        if let filePath {
            let folder = (filePath as NSString).deletingLastPathComponent
            guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder) else {
                throw Failure(description: "--metrics-file: folder \(folder) does not exist")
            }
        }
        listener = try port.map(Self.listen)
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

    private static func listen(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "--metrics-port: socket() failed: errno \(errno)") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = INADDR_ANY
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            let error = errno
            close(fd)
            throw Failure(description: "--metrics-port \(port): cannot listen (errno \(error)\(error == EADDRINUSE ? ", the port is in use" : ""))")
        }
        return fd
    }

    /// A minimal HTTP/1.0 responder: `GET /metrics` gets the registry, anything else 404.
    private func serve(_ listener: Int32) {
        while running.load(ordering: .acquiring) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var request = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 2048)
            while request.count < 16_384 {
                let n = read(client, &buffer, buffer.count)
                if n <= 0 { break }
                request += buffer[0..<n]
                if request.count >= 4, String(decoding: request.suffix(4), as: UTF8.self) == "\r\n\r\n" { break }
            }
            let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
            let path = line.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            let (status, body) = path == "/metrics" || path.hasPrefix("/metrics?") ? ("200 OK", text) : ("404 Not Found", "not found; try /metrics\n")
            let response = "HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { write(client, $0, strlen($0)) }
            close(client)
        }
    }
}
