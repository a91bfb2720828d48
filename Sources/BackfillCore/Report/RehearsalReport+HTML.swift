import Foundation
import Plot

extension RehearsalReport {
    /// The report's charts, on one time axis from the rehearsal's start (the baseline) to the
    /// job's end, the job's window shaded and marked.
    public var charts: (latency: LineChart, tps: LineChart, batches: LineChart) {
        let end = max(jobEndSeconds, jobStartSeconds + during.seconds, baseline.seconds)
        let windows = [TrafficWindow(start: 0, figures: baseline), TrafficWindow(start: jobStartSeconds, figures: during)]
        let rules = [LineChart.Rule(jobStartSeconds, label: "job start"), LineChart.Rule(jobEndSeconds, label: "job end")]
        func timed(_ chart: LineChart) -> LineChart {
            var chart = chart
            chart.x.upperBound = end
            chart.spans.insert(LineChart.Span(jobStartSeconds...max(jobStartSeconds, jobEndSeconds)), at: 0)
            chart.verticalRules = rules
            chart.leftMargin = 84
            return chart
        }
        var latency = timed(.liveLatency(title: "Live latency per second: the baseline, then during the job", windows: windows, xTitle: "time since the rehearsal started (s)"))
        latency.horizontalRules = gates.map { gate in
            LineChart.Rule(gate.limitMs, label: "gate " + gate.line.dropFirst(5), color: gate.passed ? ChartColor.green : ChartColor.vermillion, dash: "8 4")
        }
        let tps = timed(.liveTPS(title: "Live transactions per second", windows: windows, xTitle: "time since the rehearsal started (s)"))
        var batchChart = timed(LineChart(
            title: "The job's batches: transaction time against batch.target_ms", x: ChartAxis("time since the rehearsal started (s)", lowerBound: 0),
            y: ChartAxis("batch transaction (ms)"),
            series: [.init("batch (one dot each)", color: ChartColor.blue, style: .dots, points: batchSeries.map { ChartPoint($0.seconds, $0.durationMs) })]))
        batchChart.horizontalRules = [.init(Double(targetMs), label: "target_ms \(targetMs) ms", color: ChartColor.black, dash: "6 3")]
        batchChart.markKinds = [.init("retry", color: ChartColor.vermillion, symbol: .cross), .init("throttle", color: ChartColor.purple, symbol: .diamond)]
        batchChart.marks = events.map { e in
            LineChart.Mark(x: e.seconds, kind: e.event == "retry" ? 0 : 1, title: String(format: "%@ %@ at %.1f s %@", e.event, e.reason, e.seconds, e.detail))
        }
        return (latency, tps, batchChart)
    }

    /// The verdict in a few words: passed, failed, or no gate set.
    var verdict: (word: String, detail: String) {
        if outcome != JobState.done.rawValue { return ("NOT DONE", "the job ended \(outcome): the rehearsal did not walk every key") }
        if gates.isEmpty { return ("NO GATE SET", "nothing to pass or fail: give --max-live-p99-ms and/or --max-lock-wait-ms to make it a gate") }
        let failed = gates.filter { !$0.passed }
        if failed.isEmpty { return ("PASSED", "every gate held") }
        return ("FAILED", failed.map { "gate \($0.name)" }.joined(separator: ", ") + " failed")
    }

    /// One self-contained HTML page: the verdict and gates, the charts as inline SVG, the
    /// figures and the text summary. No scripts and nothing fetched; it prints on A4 or Letter.
    public func html(generatedAt date: Date = Date()) -> String {
        let (latency, tps, batchChart) = charts
        let verdict = self.verdict
        let verdictClass = verdict.word == "PASSED" ? "pass" : verdict.word == "NO GATE SET" ? "none" : "fail"
        func figure(_ name: String, _ chart: LineChart, caption: String) -> Node<HTML.BodyContext> {
            .element(named: "figure", nodes: [.data(named: "chart", value: name), .raw(chart.svg(width: 760, height: 300)), .element(named: "figcaption", nodes: [.text(caption)])])
        }
        func cell(_ field: String, _ text: String) -> Node<HTML.TableRowContext> { .td(.data(named: "field", value: field), .text(text)) }
        func trafficRow(_ name: String, _ field: String, _ format: (TrafficFigures) -> String) -> Node<HTML.TableContext> {
            .tr(.th(.text(name)), cell("baseline.\(field)", format(baseline)), cell("during.\(field)", format(during)))
        }
        let f2 = { (v: Double) in String(format: "%.2f", v) }
        let page = HTML(
            .lang(.english),
            .head(
                .meta(.charset(.utf8)),
                .meta(.name("viewport"), .content("width=device-width, initial-scale=1")),
                .title("Rehearsal of \(job): \(verdict.word)"),
                .style(Self.css)
            ),
            .body(
                .h1(.text("Rehearsal of \(job) on \(table)")),
                .p(.class("meta"), .text("\(RunEvent.timestamp(date)) · \(clients) live clients (\(traffic)) · baseline \(String(format: "%.1f", baseline.seconds)) s, then the job from its first key under checkpoint \(rehearsalJob)\(dryRun ? " · dry run: every batch rolled back" : "")")),
                .div(.class("verdict \(verdictClass)"), .data(named: "verdict", value: verdict.word), .strong(.text(verdict.word)), .text(" — " + verdict.detail)),
                .if(!gates.isEmpty, .table(
                    .class("gates"),
                    .tr(.th("gate"), .th("limit"), .th("measured during the job"), .th("samples"), .th("result")),
                    .forEach(gates) { gate in
                        .tr(.data(named: "gate", value: gate.name),
                            .td(.text(gate.name)), .td(.text(String(format: "≤ %.1f ms", gate.limitMs))),
                            .td(.text(String(format: "%.1f ms", gate.measuredMs))),
                            .td(.text("\(gate.liveTransactions) live transactions, \(gate.batches) batches")),
                            .td(.class(gate.passed ? "pass" : "fail"), .text(gate.passed ? "passed" : "FAILED" + (gate.problem.map { ": " + $0 } ?? ""))))
                    })),
                .if(nothingWrittenNote != nil, .p(.class("note"), .text("Note: " + (nothingWrittenNote ?? "")))),
                figure("latency", latency, caption: "p50, p99 and max latency of the live transactions that ended in each second (log scale). The shaded span is the job; dashed lines are the gates, judged on the whole job window."),
                figure("tps", tps, caption: "Live transactions completed per second. A dip during the job is traffic waiting on the batches' locks."),
                figure("batches", batchChart, caption: "Each dot is one committed batch: its transaction's wall time, which bounds how long its row locks were held, at the time it committed. Crosses and diamonds above the plot are retries and throttles (hover for the reason)."),
                .h2("Live traffic"),
                .table(
                    .class("figures"),
                    .tr(.th(""), .th("baseline"), .th("during the job")),
                    trafficRow("window (s)", "seconds") { String(format: "%.1f", $0.seconds) },
                    trafficRow("transactions", "transactions") { String($0.transactions) },
                    trafficRow("TPS", "tps") { String(format: "%.0f", $0.tps) },
                    trafficRow("p50 (ms)", "p50_ms") { f2($0.p50Ms) },
                    trafficRow("p99 (ms)", "p99_ms") { f2($0.p99Ms) },
                    trafficRow("max (ms)", "max_ms") { f2($0.maxMs) },
                    trafficRow("waited for a lock: transactions, worst", "lock_waits") { $0.lockWaitText },
                    trafficRow("errors", "errors") { String($0.errors) }
                ),
                .h2("The job"),
                .table(
                    .class("figures"),
                    .tr(.th("outcome"), cell("outcome", outcome)),
                    .tr(.th("rows"), cell("rows", String(rows))),
                    .tr(.th("seconds"), cell("seconds", String(format: "%.1f", seconds))),
                    .tr(.th("rows/s"), cell("rows_per_second", String(format: "%.0f", rowsPerSecond))),
                    .tr(.th("batches"), cell("batches", String(batches))),
                    .tr(.th("batch p50 / p99 / max (ms)"), cell("batch_ms", String(format: "%.1f / %.1f / %.1f", batchP50Ms, batchP99Ms, batchMaxMs))),
                    .tr(.th("batch.target_ms"), cell("target_ms", String(targetMs))),
                    .tr(.th("retries"), cell("retries", retriesText)),
                    .tr(.th("throttled"), cell("throttled_seconds", throttlesText)),
                    .tr(.th("production estimate"), cell("production_seconds_estimate", productionLine.map { String($0.dropFirst("production estimate: ".count)) } ?? "—"))
                ),
                .h2("Summary"),
                .pre(.text(text))
            )
        )
        return page.render(indentedBy: .spaces(1))
    }

    static let css = """
        body { font-family: 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif; color: #222222; max-width: 800px; margin: 24px auto; padding: 0 16px; line-height: 1.4; }
        h1 { font-size: 22px; margin: 0 0 4px; }
        h2 { font-size: 17px; margin: 28px 0 8px; break-after: avoid; page-break-after: avoid; }
        .meta { color: #555555; font-size: 13px; margin: 0 0 14px; }
        .verdict { font-size: 17px; padding: 10px 14px; border: 2px solid; border-radius: 4px; margin: 0 0 12px; }
        .verdict.pass { border-color: #009E73; background: #e8f6f1; }
        .verdict.fail { border-color: #D55E00; background: #fbeee6; }
        .verdict.none { border-color: #777777; background: #f3f3f3; }
        table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
        th, td { border: 1px solid #cccccc; padding: 4px 8px; text-align: left; vertical-align: top; }
        table.figures td { text-align: right; font-variant-numeric: tabular-nums; }
        td.pass { color: #006b4f; font-weight: bold; }
        td.fail { color: #a94400; font-weight: bold; }
        .note { background: #fff7e0; border-left: 4px solid #E69F00; padding: 6px 10px; font-size: 13px; }
        figure { margin: 18px 0; break-inside: avoid; page-break-inside: avoid; }
        figure svg { max-width: 100%; height: auto; display: block; }
        figcaption { font-size: 12px; color: #555555; margin-top: 2px; }
        pre { font-size: 11.5px; background: #f6f6f6; padding: 10px; overflow-x: auto; white-space: pre-wrap; }
        @media print { body { margin: 0 auto; max-width: none; } .verdict, td.pass, td.fail { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
        """
}
