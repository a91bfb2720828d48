import BackfillCore
import Foundation
import PostgresClient
import Testing

/// What ships: the version the binary reports, and the image the recipes run.
@Suite("Release: version, image and recipes")
struct ReleaseTests {
    @Test("--version prints Backfill's version and the libpq it runs with")
    func version() throws {
        let run = try backfill(["--version"])
        #expect(run.code == 0)
        #expect(run.out == "backfill \(BackfillVersion.current) (libpq \(LibPQ.version))\n")
        #expect(LibPQ.version.split(separator: ".").count >= 2 && LibPQ.version.allSatisfy { $0.isNumber || $0 == "." })
    }

    @Test("the Dockerfile installs this version's package as a non-root user, and every recipe runs that image")
    func imageAndRecipes() throws {
        let image = "registry.example.com/backfill:\(BackfillVersion.current)"
        let dockerfile = try String(contentsOfFile: packageRoot + "/Dockerfile", encoding: .utf8)
        #expect(dockerfile.contains("ARG VERSION=\(BackfillVersion.current)\n"))
        #expect(dockerfile.contains("FROM debian:bookworm-slim"))
        #expect(dockerfile.contains("COPY dist/backfill_${VERSION}_*.deb"))
        #expect(dockerfile.contains("\nUSER 10001:10001\n") && dockerfile.contains("ENTRYPOINT [\"backfill\"]"))
        #expect(dockerfile.contains("docker build -t \(image) ."))
        let ignore = try String(contentsOfFile: packageRoot + "/.dockerignore", encoding: .utf8)
        #expect(ignore.contains("!dist/*.deb"))

        let readme = try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
        #expect(readme.contains("docker build -t \(image) ."))
        #expect(readme.contains("apt-get install ./dist/backfill_\(BackfillVersion.current)_"))
        let recipes = FileManager.default.enumerator(atPath: packageRoot + "/deploy")?.compactMap { $0 as? String }.filter { $0.hasSuffix(".yaml") } ?? []
        var running = 0
        for recipe in recipes {
            let text = try String(contentsOfFile: packageRoot + "/deploy/" + recipe, encoding: .utf8)
            let images = text.split(separator: "\n").filter { $0.contains("backfill:") && ($0.contains("image:") || $0.contains("IMAGE:")) }
            for line in images { #expect(line.contains(image), "\(recipe): \(line)") }
            running += images.isEmpty ? 0 : 1
        }
        #expect(running >= 5, "recipes that run the image: \(running)")
    }
}
