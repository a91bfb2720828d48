import BackfillCore
import BackfillTestSupport
import Foundation
import PostgresClient
import Testing

@Suite("What batches cost the server")
struct WriteCostTests {
    @Test("batch events carry WAL bytes and the table's HOT share: an index on the filled column shows as no HOT updates and more WAL")
    func hotShareAndWal() throws {
        let url = try TestDatabases.create("writecost")
        let db = try Connection(url)
        var results: [String: (hot: Double, walPerRow: Double)] = [:]
        for table in ["plain", "indexed"] {
            try db.execute("""
                CREATE TABLE \(table) (id bigint PRIMARY KEY, payload text NOT NULL, filled bigint, writes int NOT NULL DEFAULT 0, touched int NOT NULL DEFAULT 0) WITH (fillfactor = 50);
                INSERT INTO \(table) (id, payload) SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
                ANALYZE \(table);
                """)
            if table == "indexed" { try db.execute("CREATE INDEX ON indexed (filled)") }
            let (outcome, events) = try runJob(itemsJob(name: table, table: table, extra: "throttle: {max_rows_per_second: 25000, when_blocking: false}"), url: url)
            guard case .done = outcome else { Issue.record("\(outcome)"); return }
            let batches = events.filter { $0.kind == .batch }
            let wal = batches.reduce(0.0) { sum, e in if case .int(let n) = e["wal_bytes"] { sum + Double(n) } else { sum } }
            let hot = batches.compactMap { e -> Double? in if case .double(let r) = e["hot_update_ratio"] { r } else { nil } }.last
            #expect(batches.allSatisfy { $0["wal_bytes"] != nil }, "a batch without wal_bytes")
            results[table] = (try #require(hot, "no hot_update_ratio in \(batches.count) batches of \(table)"), wal / 100_000)
        }
        let plain = try #require(results["plain"]), indexed = try #require(results["indexed"])
        #expect(plain.hot > 0.5 && indexed.hot < 0.1, "HOT share: plain \(plain.hot), indexed \(indexed.hot)")
        #expect(plain.walPerRow > 20 && indexed.walPerRow > plain.walPerRow, "WAL bytes per row: plain \(plain.walPerRow), indexed \(indexed.walPerRow)")
    }
}
