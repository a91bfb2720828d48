import BackfillCore
import Metrics
import Prometheus

/// Sets up Prometheus metrics for `--metrics-file` / `--metrics-port`, once per process.
enum MetricsSetup {
    nonisolated(unsafe) private static var started: MetricsExporter?

    /// Bootstraps swift-metrics with a Prometheus registry and starts exporting it.
    static func start(file: String?, port: Int?, bind: String?) throws -> MetricsExporter? {
        guard file != nil || port != nil else { return nil }
        if let started { return started }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["backfill_batch_duration_seconds"] =
            [5, 10, 25, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000].map { Duration.milliseconds($0) }
        MetricsSystem.bootstrap(factory)
        let exporter = try MetricsExporter(registry: registry, filePath: file, port: port, bindAddress: bind ?? "0.0.0.0")
        started = exporter
        return exporter
    }
}
