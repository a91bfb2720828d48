import BackfillCore
import Metrics

/// Sets up Prometheus metrics for `--metrics-file` / `--metrics-port`, once per process.
enum MetricsSetup {
    nonisolated(unsafe) private static var started: MetricsExporter?

    /// Bootstraps swift-metrics with a Prometheus registry and starts exporting it.
    static func start(file: String?, port: Int?, bind: String?) throws -> MetricsExporter? {
        guard file != nil || port != nil else { return nil }
        if let started { return started }
        let factory = PrometheusFactory()
        MetricsSystem.bootstrap(factory)
        let exporter = try MetricsExporter(registry: factory.registry, filePath: file, port: port, bindAddress: bind ?? "0.0.0.0")
        started = exporter
        return exporter
    }
}
