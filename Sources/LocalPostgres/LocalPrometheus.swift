import Foundation
import Synchronization

/// A throwaway Prometheus (the `prometheus` program, Debian's package), for the tests that scrape
/// a real run: it scrapes the given `127.0.0.1` targets every second, keeps its data in a
/// temporary directory removed by `stop()`, and answers on 127.0.0.1 at `port`. It runs in the
/// foreground as a child of this process; `stop()` runs when its owner stops it, when it is
/// released (`deinit`) and at the process's normal exit.
public final class LocalPrometheus: LocalServer {
    public let port: Int
    public let directory: String
    private let pid: pid_t
    private let stopped = Atomic<Bool>(false)

    /// Where Debian installs it.
    public static let program = "/usr/bin/prometheus"
    /// `promtool`, installed with it.
    public static let promtool = "/usr/bin/promtool"

    /// Starts Prometheus scraping `targets` (`127.0.0.1:PORT`, `/metrics`) as scrape job
    /// `jobName`, and waits until `/-/ready` answers 200.
    public init(scraping targets: [String], jobName: String = "backfill") throws {
        guard FileManager.default.isExecutableFile(atPath: Self.program) else {
            throw LocalPostgres.Failure(description: "prometheus is not installed: `apt-get install prometheus` (.ci/run installs it)")
        }
        port = try LocalPostgres.freePort()
        directory = "/tmp/backfill-prometheus-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        let config = """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: \(jobName)
                scrape_interval: 1s
                scrape_timeout: 900ms
                static_configs:
                  - targets: [\(targets.map { "'\($0)'" }.joined(separator: ", "))]

            """
        try config.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        pid = try LocalPostgres.spawn([Self.program, "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                                       "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"],
                                      output: directory + "/prometheus.log")
        ExitRegistry.register(self)
        let deadline = Date().addingTimeInterval(30)
        while Self.status(port: port, path: "/-/ready") != 200 {
            guard Date() < deadline, kill(pid, 0) == 0 else {
                let log = (try? String(contentsOfFile: directory + "/prometheus.log", encoding: .utf8)) ?? ""
                stop()
                throw LocalPostgres.Failure(description: "prometheus was not ready within 30 s: \(log.suffix(2000))")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    deinit { stop() }

    /// Stops Prometheus (SIGTERM, SIGKILL after 10 s), reaps it and removes its directory. Safe
    /// to call more than once.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 where waitpid(pid, &status, WNOHANG) == 0 { Thread.sleep(forTimeInterval: 0.1) }
        if kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The body of `GET path` on its HTTP API, or nil when it does not answer 200.
    public func get(_ path: String) -> String? {
        guard let (code, body) = Self.request(port: port, path: path), code == 200 else { return nil }
        return body
    }

    private static func status(port: Int, path: String) -> Int? { request(port: port, path: path)?.status }

    /// A minimal HTTP/1.0 GET on 127.0.0.1 (Prometheus answers it without chunking, then closes).
    static func request(port: Int, path: String) -> (status: Int, body: String)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n"), let code = Int(text.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return (code, String(text[split.upperBound...]))
    }
}
