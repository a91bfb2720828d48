import BackfillCore
import Foundation
import PostgresClient
import Testing
import Yams

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

@Suite("Kubernetes recipes: what each exit code does")
struct KubernetesRecipeTests {
    /// The Job spec of every Job and CronJob in deploy/kubernetes, by file.
    private func jobSpecs() throws -> [(file: String, spec: [String: Any])] {
        let folder = packageRoot + "/deploy/kubernetes"
        return try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }.sorted().compactMap { file in
            let manifest = try #require(try Yams.load(yaml: String(contentsOfFile: folder + "/" + file, encoding: .utf8)) as? [String: Any], "\(file)")
            let spec = manifest["spec"] as? [String: Any]
            switch manifest["kind"] as? String {
            case "Job": return (file, try #require(spec, "\(file)"))
            case "CronJob": return (file, try #require((spec?["jobTemplate"] as? [String: Any])?["spec"] as? [String: Any], "\(file)"))
            default: return nil
            }
        }
    }

    /// The action of the first rule that matches the container's exit `code` (rules are evaluated
    /// in order), or `Count` when none does: Kubernetes' default.
    private func action(_ rules: [[String: Any]], exitCode code: Int) -> String {
        for rule in rules {
            guard let match = rule["onExitCodes"] as? [String: Any], let values = match["values"] as? [Int] else { continue }
            if (match["operator"] as? String == "In") == values.contains(code) { return rule["action"] as? String ?? "?" }
        }
        return "Count"
    }

    @Test("every Job and CronJob: 2 fails the Job at once (the fleet's index: one target's), 3 and 4 never spend the backoff limit, 1 does, a disruption is ignored")
    func podFailurePolicies() throws {
        let specs = try jobSpecs()
        #expect(specs.map(\.file) == ["cronjob.yaml", "fleet-indexed-job.yaml", "indexed-job.yaml", "job.yaml"])
        for (file, spec) in specs {
            let rules = try #require((spec["podFailurePolicy"] as? [String: Any])?["rules"] as? [[String: Any]], "\(file): no podFailurePolicy")
            #expect(((spec["template"] as? [String: Any])?["spec"] as? [String: Any])?["restartPolicy"] as? String == "Never", "\(file): podFailurePolicy needs restartPolicy Never")
            // A fleet's pod runs one target: its exit 2 is that target's, and the others go on.
            #expect(action(rules, exitCode: 2) == (file == "fleet-indexed-job.yaml" ? "FailIndex" : "FailJob"), "\(file)")
            for code in [3, 4] { #expect(["FailJob", "FailIndex"].contains(action(rules, exitCode: code)), "\(file): exit \(code)") }
            #expect(action(rules, exitCode: 1) == "Count", "\(file)")
            let first = try #require(rules.first)
            let condition = (first["onPodConditions"] as? [[String: Any]])?.first
            #expect(first["action"] as? String == "Ignore" && condition?["type"] as? String == "DisruptionTarget" && condition?["status"] as? String == "True", "\(file): \(first)")
        }
    }
}
