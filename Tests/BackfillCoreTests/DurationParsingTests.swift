import BackfillCore
import Testing

@Suite("Durations for --max-runtime and --baseline")
struct DurationParsingTests {
    @Test("a number with its unit", arguments: [
        ("90s", 90.0), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), (" 15S ", 15),
    ])
    func accepted(text: String, seconds: Double) throws {
        #expect(try parseDuration(text) == seconds)
    }

    @Test("refused, with the reason and how to write it", arguments: [
        ("3", "has no unit"), ("45.5", "has no unit"), ("-5", "has no unit"), ("soon", "is not a duration"),
        ("10x", "without a unit"), ("1h30", "without a unit"), ("0s", "not a positive duration"), ("", "not a positive duration"),
    ])
    func refused(text: String, reason: String) {
        #expect {
            try parseDuration(text)
        } throws: { error in
            let message = "\(error)"
            return message.contains(reason) && message.contains("90s, 10m, 2h")
        }
    }
}
