@testable import BackfillCore
import Foundation
import PostgresClient
import Testing

@Suite("cdc: the job file's section, the message statement and the plan's lines")
struct ChangeCaptureTests {
    let job = "name: x\ntable: t\nkey: [id]\nset: {a: 1}\n"

    @Test("off by default; origin and messages read, and left out of the fingerprint")
    func parsing() throws {
        let plain = try JobSpec.parse(yaml: job, file: "x.yaml")
        #expect(plain.cdc == JobSpec.CDC() && plain.cdc.origin == nil && !plain.cdc.messages)
        let marked = try JobSpec.parse(yaml: job + "cdc:\n  origin: backfill.fill-2_a\n  messages: true\n", file: "x.yaml")
        #expect(marked.cdc.origin == "backfill.fill-2_a" && marked.cdc.messages)
        #expect(try JobSpec.parse(yaml: job + "cdc: {messages: yes}", file: "x.yaml").cdc.origin == nil)
        #expect(plain.fingerprint == marked.fingerprint, "cdc labels the changes; it does not change what rows get")
    }

    @Test(
        "a bad cdc section names the file, the field and the fix",
        arguments: [
            ("cdc: {messages: sometimes}", "cdc.messages", "true or false"),
            ("cdc: {origin: [a, b]}", "cdc.origin", "name of a replication origin"),
            ("cdc: {origin: true}", "cdc.origin", "name of a replication origin"),
            ("cdc: {origin: ~}", "cdc.origin", "name of a replication origin"),
            ("cdc: {origin: 'has space'}", "cdc.origin", "not a usable replication origin name"),
            ("cdc: {origin: pg_16384}", "cdc.origin", "not a usable"),
            ("cdc: {origin: None}", "cdc.origin", "not a usable"),
            ("cdc: {origin: any}", "cdc.origin", "not a usable"),
            ("cdc: {origin: -lead}", "cdc.origin", "not a usable"),
            ("cdc: {origin: \(String(repeating: "o", count: 51))}", "cdc.origin", "not a usable"),
            ("cdc: {orign: backfill}", "cdc.orign", "did you mean `origin`"),
            ("cdc: {prefix: etl}", "cdc.prefix", "unknown field"),
            ("cdc: true", "cdc", "mapping"),
        ] as [(String, String, String)])
    func badSection(yaml: String, field: String, problem: String) {
        do {
            _ = try JobSpec.parse(yaml: job + yaml, file: "jobs/cdc.yaml")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.file == "jobs/cdc.yaml")
            #expect(error.field == field, "\(error)")
            #expect(error.description.contains(problem), "\(error)")
            #expect(!error.fix.isEmpty && error.line != nil, "\(error)")
        }
    }

    @Test("the message: one transactional pg_logical_emit_message, prefix backfill, its content a parameter")
    func message() throws {
        var spec = try JobSpec.parse(yaml: job, file: "x.yaml")
        #expect(ChangeCapture.message(spec, run: "r", worker: "w", range: 0, lower: nil, upper: ["1"], keys: 1).isEmpty)
        spec.cdc.messages = true
        let statements = ChangeCapture.message(spec, run: "run-1", worker: "host:1:w0", range: 3, lower: ["it's", "2"], upper: ["z\"", "9"], keys: 1000)
        let statement = try #require(statements.first)
        #expect(statements.count == 1)
        #expect(statement.sql == "SELECT pg_catalog.pg_logical_emit_message(true, 'backfill', $1::text)")
        #expect(statement.prepared)
        let content = try #require(statement.parameters.first.flatMap { if case .text(let t) = $0 { t } else { nil } })
        #expect(content == #"{"job":"x","keys":1000,"lower":["it's","2"],"range":3,"run":"run-1","upper":["z\"","9"],"worker":"host:1:w0"}"#)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(content.utf8)) as? [String: Any])
        #expect(parsed["upper"] as? [String] == ["z\"", "9"] && parsed["range"] as? Int == 3)
        let first = ChangeCapture.content(job: "x", run: "r", worker: "w", range: 0, lower: nil, upper: ["5"], keys: 5)
        #expect(first.contains(#""lower":null"#), "a range's first batch has no lower key: \(first)")
    }

    @Test("origin names: the job's for the first session, then NAME-2, NAME-3…")
    func originNames() {
        #expect(ChangeCapture.originName("backfill", session: 1) == "backfill")
        #expect(ChangeCapture.originName("backfill", session: 2) == "backfill-2")
        #expect(JobSpec.CDC.isValidOrigin(String(repeating: "o", count: 50)))
        #expect(JobSpec.CDC.isValidOrigin(ChangeCapture.originName(String(repeating: "o", count: 50), session: ChangeCapture.maxSessions)) == false,
                "a longer name is still a PostgreSQL origin name, only not a job file's")
    }

    @Test("the plan says what the batches emit, and what the server says now")
    func planLines() throws {
        var spec = try JobSpec.parse(yaml: job, file: "x.yaml")
        #expect(PlanReport.cdcLines(spec, now: nil).isEmpty)
        spec.cdc = JobSpec.CDC()
        spec.cdc.origin = "backfill"
        spec.cdc.messages = true
        let lines = PlanReport.cdcLines(spec, now: ["warning: wal_level is `replica`"])
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("cdc:        ") && lines[0].contains("`backfill`") && lines[0].contains("`backfill-2`"))
        #expect(lines[1].contains("pg_logical_emit_message(true, 'backfill', $1::text)") && lines[1].contains(#""job":"x""#))
        #expect(lines[2] == "            now: warning: wal_level is `replica`")
    }
}
