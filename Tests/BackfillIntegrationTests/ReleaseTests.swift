import BackfillCore
import Foundation
import PostgresClient
import Testing

/// What ships: the version the binary reports.
@Suite("Release: version")
struct ReleaseTests {
    @Test("--version prints Backfill's version and the libpq it runs with")
    func version() throws {
        let run = try backfill(["--version"])
        #expect(run.code == 0)
        #expect(run.out == "backfill \(BackfillVersion.current) (libpq \(LibPQ.version))\n")
        #expect(LibPQ.version.split(separator: ".").count >= 2 && LibPQ.version.allSatisfy { $0.isNumber || $0 == "." })
    }
}
