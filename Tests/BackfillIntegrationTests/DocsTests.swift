import Foundation
import Testing

/// The documentation travels with the code: every relative link in the repository's Markdown
/// resolves to a file (and heading) inside the repository.
@Suite("Docs: links stay inside the repository")
struct DocsTests {
    @Test("every relative link in every Markdown file resolves inside the repository")
    func relativeLinks() throws {
        let files = markdownFiles()
        #expect(files.contains("README.md") && files.contains("docs/README.md") && files.contains("deploy/README.md"))
        var checked = 0
        for file in files {
            let text = try String(contentsOfFile: packageRoot + "/" + file, encoding: .utf8)
            checked += Self.links(in: text).count
            for problem in problems(in: text, file: file) { Issue.record("\(file): \(problem)") }
        }
        #expect(checked >= 20, "only \(checked) links found: is the link parser still working?")
        let readme = try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
        #expect(Self.links(in: readme).contains("docs/README.md"), "the README links the docs")
    }

    @Test("the README is the front page: at most 200 lines, the set-up commands, a link to every page of docs/; every link of it and of docs/ resolves, anchors included")
    func frontPage() throws {
        let readme = try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
        let lines = readme.filter { $0 == "\n" }.count + (readme.hasSuffix("\n") || readme.isEmpty ? 0 : 1)
        #expect(lines <= 200, "README.md has \(lines) lines: move the detail into docs/")
        // The two commands a newcomer runs first; `.ci/run` runs the same test command.
        #expect(readme.contains("\nswift run backfill demo ") && readme.contains("\nswift test "))
        let ci = try String(contentsOfFile: packageRoot + "/.ci/run", encoding: .utf8)
        #expect(ci.contains("swift test"))

        let targets = Set(Self.links(in: readme).map { String($0.prefix { $0 != "#" }) })
        let pages = try FileManager.default.contentsOfDirectory(atPath: packageRoot + "/docs").filter { $0.hasSuffix(".md") }.sorted()
        #expect(pages.count >= 10, "docs/ holds \(pages)")
        for page in pages { #expect(targets.contains("docs/" + page), "the README does not link docs/\(page)") }
        for other in ["deploy/README.md", "benchmarks/RESULTS.md"] { #expect(targets.contains(other), "the README does not link \(other)") }

        var anchored = 0
        for file in ["README.md"] + pages.map({ "docs/" + $0 }) {
            let text = try String(contentsOfFile: packageRoot + "/" + file, encoding: .utf8)
            anchored += Self.links(in: text).filter { $0.contains("#") && !$0.contains("://") }.count
            for problem in problems(in: text, file: file) { Issue.record("\(file): \(problem)") }
        }
        #expect(anchored >= 20, "only \(anchored) links to headings found: is the anchor check still reached?")
    }

    @Test("the checker catches what it should", arguments: [
        ("see [design](../shared/DESIGN.md)", false), ("[x](docs/nowhere.md)", false), ("[x](/etc/passwd)", false),
        ("[x](README.md#no-such-heading)", false), ("[x](README.md#install)", true), ("[x](https://example.com/a.md)", true),
        ("```\n[not a link](missing.md)\n```", true), ("`[not a link](missing.md)`", true), ("[ref]: docs/cli.md", true),
        ("[ref]: ../outside.md", false), ("the contract is in `../shared/DESIGN.md`", false), ("see `docs/cli.md`", true),
        ("[x](docs/cli.md#exit-codes)", true), ("[x](docs/cli.md#no-such-heading)", false), ("[x](docs/nowhere.md#exit-codes)", false),
    ])
    func checker(markdown: String, ok: Bool) {
        let found = problems(in: markdown, file: "README.md")
        #expect(found.isEmpty == ok, "\(markdown): \(found)")
    }

    /// What is wrong with the links (and Markdown paths written as code) of one file.
    private func problems(in text: String, file: String) -> [String] {
        let links = Self.links(in: text).compactMap { target in problem(with: target, in: file).map { "`\(target)`: \($0)" } }
        let paths = Self.codePaths(in: text).filter { resolve($0, from: file) == nil && resolve($0, from: "README.md") == nil }
        return links + paths.map { "`\($0)` names a Markdown file that is not in the repository" }
    }

    /// The repository's Markdown files, relative to its root (no build or hidden folders).
    private func markdownFiles() -> [String] {
        let skip: Set<String> = ["dist", "node_modules"]
        var found: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: packageRoot)
        while let path = enumerator?.nextObject() as? String {
            let name = (path as NSString).lastPathComponent
            if name.hasPrefix(".") || skip.contains(name) {
                enumerator?.skipDescendants()
                continue
            }
            if path.hasSuffix(".md") { found.append(path) }
        }
        return found.sorted()
    }

    /// Link targets: inline `[text](target)` and reference definitions `[ref]: target`, outside
    /// fenced code blocks and code spans.
    static func links(in markdown: String) -> [String] {
        let prose = withoutCode(markdown)
        var targets: [String] = []
        let inline = /\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/
        for match in prose.matches(of: inline) { targets.append(String(match.1)) }
        let reference = /(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/
        for match in prose.matches(of: reference) { targets.append(String(match.1)) }
        return targets
    }

    /// Paths to Markdown files written as code (`` `docs/cli.md` ``), which readers follow too.
    static func codePaths(in markdown: String) -> [String] {
        let fenced = /(?s)```.*?```/
        let text = markdown.replacing(fenced, with: "")
        return text.matches(of: /`([^`\s]+\.md)`/).map { String($0.1) }
    }

    private static func withoutCode(_ markdown: String) -> String {
        markdown.replacing(/(?s)```.*?```/, with: "").replacing(/`[^`\n]*`/, with: "``")
    }

    /// Why `target`, linked from `file`, does not resolve; nil when it does.
    private func problem(with target: String, in file: String) -> String? {
        if target.contains("://") || target.hasPrefix("mailto:") { return nil }
        let parts = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0]).removingPercentEncoding ?? String(parts[0])
        if path.hasPrefix("/") { return "an absolute path points outside the repository" }
        let destination = path.isEmpty ? file : resolve(path, from: file)
        guard let destination else { return "does not resolve to a file or folder inside the repository" }
        if parts.count == 2, destination.hasSuffix(".md") {
            let anchor = String(parts[1])
            let text = (try? String(contentsOfFile: packageRoot + "/" + destination, encoding: .utf8)) ?? ""
            if !Self.headingAnchors(in: text).contains(anchor) { return "no heading `#\(anchor)` in \(destination)" }
        }
        return nil
    }

    /// The repository-relative path `path` names from `file`, if it exists inside the repository.
    private func resolve(_ path: String, from file: String) -> String? {
        let directory = (file as NSString).deletingLastPathComponent
        var components: [String] = []
        for part in ((directory.isEmpty ? path : directory + "/" + path) as NSString).pathComponents where part != "." {
            if part == ".." {
                guard !components.isEmpty else { return nil }
                components.removeLast()
            } else if part != "/" {
                components.append(part)
            }
        }
        let relative = components.joined(separator: "/")
        return FileManager.default.fileExists(atPath: packageRoot + "/" + relative) ? relative : nil
    }

    /// GitHub's anchors for the headings of a Markdown text.
    static func headingAnchors(in markdown: String) -> Set<String> {
        let text = markdown.replacing(/(?s)```.*?```/, with: "")
        var anchors: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix("#") {
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces)
            let slug = title.lowercased().unicodeScalars.compactMap { scalar -> String? in
                if scalar == " " { return "-" }
                if scalar == "-" || scalar == "_" || CharacterSet.alphanumerics.contains(scalar) { return String(scalar) }
                return nil
            }.joined()
            anchors.insert(slug)
        }
        return anchors
    }
}
