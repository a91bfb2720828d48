import Foundation
import PostgresClient
import Testing

@Suite("SQLSTATE classification and pure helpers")
struct ClassificationTests {
    @Test(
        "retryable SQLSTATEs",
        arguments: [
            ("55P03", RetryReason.lockTimeout), ("40P01", .deadlock), ("40001", .serializationFailure),
            ("57014", .statementTimeout), ("08006", .connectionLost), ("08001", .connectionLost),
            ("08003", .connectionLost), ("57P01", .connectionLost), ("57P02", .connectionLost),
            ("57P03", .connectionLost),
        ])
    func retryable(code: String, reason: RetryReason) {
        let error = PostgresError(code: .init(code), message: "x")
        #expect(error.batchDisposition == .retry(reason))
    }

    @Test(
        "session-ending errors reconnect",
        arguments: [("57P05", "FATAL"), ("25P03", "FATAL"), ("57P05", "ERROR"), ("25P03", "ERROR"), ("XX000", "FATAL"),
                    ("53300", "FATAL"), ("XX000", "PANIC"), ("42501", "FATAL")])
    func sessionEnding(code: String, severity: String) {
        let error = PostgresError(code: .init(code), severity: severity, message: "terminating connection")
        #expect(error.isConnectionLost)
        #expect(error.batchDisposition == .retry(.connectionLost))
    }

    @Test("a refused login or a missing database is not retried", arguments: ["28P01", "28000", "3D000"])
    func refusedLogin(code: String) {
        #expect(PostgresError(code: .init(code), severity: "FATAL", message: "x").batchDisposition == .permanent)
    }

    @Test("permanent SQLSTATEs", arguments: ["23505", "42P01", "42703", "42601", "22012", "XX000", "53100", "28P01"])
    func permanent(code: String) {
        #expect(PostgresError(code: .init(code), message: "x").batchDisposition == .permanent)
    }

    @Test("timestamps round-trip through PostgreSQL's ISO text")
    func timestamps() throws {
        let date = Date(timeIntervalSince1970: 1_790_000_000.123456)
        let text = PostgresTimestamp.format(date)
        #expect(text == "2026-09-21 14:13:20.123456+00")
        let parsed = try #require(PostgresTimestamp.parse(text))
        #expect(abs(parsed.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_002)
        #expect(PostgresTimestamp.parse("2026-09-21 19:43:20.123456+05:30")?.timeIntervalSince1970
            == parsed.timeIntervalSince1970)
        #expect(PostgresTimestamp.parse("2026-09-21")?.timeIntervalSince1970 == 1_789_948_800)
        #expect(PostgresTimestamp.parse("not a date") == nil)
    }

    @Test("qualified names fold like PostgreSQL and quote safely")
    func qualifiedNames() {
        #expect(Identifier.parseQualified("public.Accounts") == ["public", "accounts"])
        #expect(Identifier.parseQualified("\"My Schema\".\"a.b\"") == ["My Schema", "a.b"])
        #expect(Identifier.parseQualified("\"a\"\"b\"") == ["a\"b"])
        #expect(Identifier.parseQualified("a..b") == nil)
        #expect(Identifier.parseQualified("\"open") == nil)
        #expect(Identifier.parseQualified("x; DROP TABLE y") == nil)
        #expect(Identifier.quote("a\"b") == "\"a\"\"b\"")
        #expect(Identifier.quoteQualified(["public", "; DROP TABLE x"]) == "\"public\".\"; DROP TABLE x\"")
    }

    @Test("connection descriptions never contain the password")
    func redaction() {
        let url = "postgresql://app:s3cr3t-pw@db.example:6432/prod?sslmode=require"
        let described = ConnectionInfo.describe(url)
        #expect(described == "host=db.example port=6432 dbname=prod user=app")
        #expect(!described.contains("s3cr3t"))
        #expect(ConnectionInfo.describe("host=h password='p w' user=u") == "host=h user=u")
        #expect(ConnectionInfo.redact("failed for postgresql://app:s3cr3t-pw@db", secrets: ["s3cr3t-pw"])
            == "failed for postgresql://app:********@db")
    }
}
