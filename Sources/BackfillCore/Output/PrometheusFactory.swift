import CoreMetrics
import Prometheus

/// The swift-metrics backend of `--metrics-file` and `--metrics-port`: swift-prometheus's factory,
/// except that every series it creates gets its `# HELP` line (`RunMetrics.help`), which
/// swift-prometheus' own factory leaves out, and the batch duration its buckets (5 ms … 10 s).
public struct PrometheusFactory: MetricsFactory {
    public let registry: PrometheusCollectorRegistry
    private let base: PrometheusMetricsFactory
    private let buckets: [String: [Duration]]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        base = PrometheusMetricsFactory(registry: registry)
        buckets = ["backfill_batch_duration_seconds": [5, 10, 25, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000].map { .milliseconds($0) }]
    }

    /// The series' name with its help text (the whole name in `metricName`: nothing is joined on).
    private func named(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: RunMetrics.help[label] ?? "")
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: named(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: named(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: named(label), labels: dimensions) }
        return base.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: named(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: named(label), labels: dimensions, buckets: buckets[label] ?? base.defaultDurationHistogramBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { base.destroyFloatingPointCounter(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    public func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
