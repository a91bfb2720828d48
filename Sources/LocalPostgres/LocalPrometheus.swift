import Foundation
import Synchronization

/// A throwaway Prometheus (the `prometheus` program, Debian's package), for the tests that scrape
/// a real run: it scrapes the given `127.0.0.1` targets every second, keeps its data in a
/// temporary directory removed by `stop()`, and answers on 127.0.0.1 at `port`. It runs in the
/// foreground as a child of this process; `stop()` runs when its owner stops it, when it is
/// released (`deinit`) and at the process's normal exit; one whose owning process died without
/// any of these (killed, crashed) is killed by the next `LocalPrometheus` started.
public final class LocalPrometheus: LocalServer {
    public let port: Int
    public let directory: String
    private let pid: pid_t
    private let stopped = Atomic<Bool>(false)
    private static let directoryPrefix = "backfill-prometheus-"

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
        DaemonFiles.reapOrphans(prefix: Self.directoryPrefix, pidFile: "prometheus.pid")
        port = try LocalPostgres.freePort()
        directory = "/tmp/\(Self.directoryPrefix)\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        try DaemonFiles.recordOwner(in: directory)
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
        try String(pid).write(toFile: directory + "/prometheus.pid", atomically: true, encoding: .utf8)
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

    private static func request(port: Int, path: String) -> (status: Int, body: String)? {
        httpGet(port: port, path: path).flatMap(httpStatusAndBody)
    }
}
