import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

@Suite("Benchmark harness smoke run")
struct BenchSmokeTests {
    @Test("backfill-bench --rows 20000 --live-clients 2 --rounds 2 --uuid-rows 5000: every strategy fills the table right, each round kept; the charts are written")
    func smoke() throws {
        let bench = URL(fileURLWithPath: backfillExecutable).deletingLastPathComponent().appendingPathComponent("backfill-bench").path
        let output = NSTemporaryDirectory() + "backfill-bench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bench)
        process.arguments = ["--rows", "20000", "--live-clients", "2", "--baseline", "1", "--series", "5000", "--rounds", "2", "--uuid-rows", "5000", "--output-dir", output, "--no-markdown-file"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let data = try Data(contentsOf: URL(fileURLWithPath: output + "/results/latest.json"))
        let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let main = try #require(report["main"] as? [String: Any])
        let results = try #require(main["results"] as? [[String: Any]])
        #expect(results.compactMap { $0["strategy"] as? String } == ["single-update", "offset-5k", "cte-1k", "backfill-defaults", "backfill-tuned", "backfill-2-workers", "loop", "backfill-physical"])
        #expect(results.allSatisfy { ($0["rows"] as? Int) == 20000 && ($0["rows_right"] as? Int) == 20000 && (($0["rows_per_second"] as? Double) ?? 0) > 0 })
        // Both rounds of every strategy, each with its own rows checked; the loop took the key
        // span of Backfill's median batch, and it is compared with.
        #expect(results.allSatisfy { (($0["rounds"] as? [[String: Any]]) ?? []).compactMap { $0["rows_right"] as? Int } == [20000, 20000] })
        let loop = try #require(results.first { $0["strategy"] as? String == "loop" })
        #expect(loop["batch_size_p50"] as? Int == results[3]["rounds"].flatMap { ($0 as? [[String: Any]])?.first?["batch_size_p50"] as? Int })
        #expect(results.allSatisfy { $0["ratio_to_loop"] is Double })
        // The uuid table: one UPDATE, Backfill's defaults and its physical walk, every row right, no loop.
        let uuid = try #require((report["uuid"] as? [String: Any])?["results"] as? [[String: Any]])
        #expect(uuid.compactMap { $0["strategy"] as? String } == ["single-update", "backfill-defaults", "backfill-physical"])
        #expect(uuid.allSatisfy { ($0["rows_right"] as? Int) == 5000 && (($0["rounds"] as? [Any])?.count ?? 0) == 2 && $0["ratio_to_loop"] == nil })
        #expect(results.allSatisfy { (($0["live"] as? [String: Any])?["transactions"] as? Int ?? 0) > 0 })
        #expect((report["series"] as? [[String: Any]])?.first?["rows"] as? Int == 5000)
        #expect(results.allSatisfy { ((($0["live"] as? [String: Any])?["series"] as? [[String: Any]])?.count ?? 0) >= 1 })
        #expect(FileManager.default.fileExists(atPath: output + "/RESULTS.md") == false)

        // The charts: well-formed SVG; one latency panel per strategy and the baseline; a bar per
        // strategy; a line per strategy of the series.
        func chart(_ name: String) throws -> XMLDocument {
            try XMLDocument(xmlString: String(contentsOfFile: output + "/results/" + name, encoding: .utf8))
        }
        #expect(try chart("live-latency.svg").nodes(forXPath: "//*[@data-panel]").count == 9)
        #expect(try chart("rows-per-second.svg").nodes(forXPath: "//*[@data-category]/*[local-name()='rect']").count == 8)
        #expect(try chart("scale-series.svg").nodes(forXPath: "//*[@data-series]").count == 8)
    }
}
