import BackfillCore
import PostgresClient
import Testing

@Suite("SQL generation, batch sizing, retries, rate limit")
struct BatchLogicTests {
    @Test("single-key batches are bounded by a quoted key range")
    func singleKeySQL() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: public.accounts\nkey: [id]\nwhere: c IS NULL\nset: {c: 'b * 2'}", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: [KeyColumn(name: "id", type: "bigint")])
        #expect(sql.batch.text == #"WITH changed AS (UPDATE "public"."accounts" SET "c" = (b * 2) WHERE "id" > $1::bigint AND "id" <= $2::bigint AND (c IS NULL) RETURNING NOT ("id" > $1::bigint AND "id" <= $2::bigint) AS outside) SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed"#)
        #expect(sql.batchFromStart.text == #"WITH changed AS (UPDATE "public"."accounts" SET "c" = (b * 2) WHERE "id" <= $1::bigint AND (c IS NULL) RETURNING NOT ("id" <= $1::bigint) AS outside) SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed"#)
        // With the checkpoint: the changed rows are counted once, and both read the tally.
        #expect(sql.batch(afterKey: true, checkpoint: "UPDATE r SET n = n + (SELECT rows FROM tally)").text
            == #"WITH changed AS (UPDATE "public"."accounts" SET "c" = (b * 2) WHERE "id" > $1::bigint AND "id" <= $2::bigint AND (c IS NULL) RETURNING NOT ("id" > $1::bigint AND "id" <= $2::bigint) AS outside), tally AS (SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed), checkpoint AS (UPDATE r SET n = n + (SELECT rows FROM tally)) SELECT rows, outside FROM tally"#)
        let counts = try #require(sql.counts(afterKey: true))
        #expect((counts.rows, counts.outside) == ("(SELECT rows FROM tally)", "(SELECT outside FROM tally)") && counts.still == nil)
        #expect(sql.upperBound.text.contains(#"WHERE "id" > $1::bigint ORDER BY "public"."accounts"."id" OFFSET $2 LIMIT 1"#))
        #expect(sql.upperBound.text.contains(#"ORDER BY "public"."accounts"."id" DESC LIMIT 1"#))
        #expect(!sql.upperBoundFromStart.text.contains("WHERE"))
    }

    @Test("composite keys use row comparison; delete and sql actions")
    func compositeKeySQL() throws {
        let key = [KeyColumn(name: "tenant", type: "text"), KeyColumn(name: "a\"b", type: "timestamp with time zone")]
        let delete = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [tenant, 'a\"b']\naction: delete\nwhere: old", file: "j.yaml")
        let sql = BatchStatements(spec: delete, key: key)
        #expect(sql.batch.text == #"WITH changed AS (DELETE FROM "t" WHERE ("tenant", "a""b") > ($1::text, $2::timestamp with time zone) AND ("tenant", "a""b") <= ($3::text, $4::timestamp with time zone) AND (old) RETURNING NOT (("tenant", "a""b") > ($1::text, $2::timestamp with time zone) AND ("tenant", "a""b") <= ($3::text, $4::timestamp with time zone)) AS outside) SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed"#)
        let custom = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [tenant, 'a\"b']\nsql: UPDATE t SET x = 1 FROM batch", file: "j.yaml")
        #expect(BatchStatements(spec: custom, key: key).batchFromStart.text
            == #"WITH batch AS MATERIALIZED (SELECT "tenant", "a""b" FROM "t" WHERE ("tenant", "a""b") <= ($1::text, $2::timestamp with time zone) FOR NO KEY UPDATE) UPDATE t SET x = 1 FROM batch"#)
    }

    @Test("steady timings converge on the target")
    func sizerSteady() {
        var sizer = BatchSizer(initial: 1000, min: 100, max: 50_000, targetMs: 50)
        // The table takes 0.01 ms per key: 5,000 keys fill 50 ms.
        for _ in 0..<20 { sizer.record(keys: sizer.size, durationMs: Double(sizer.size) * 0.01) }
        #expect(abs(sizer.size - 5000) <= 50)
    }

    @Test("growth is at most ×2 a step, clamped to max")
    func sizerGrowth() {
        var sizer = BatchSizer(initial: 1000, min: 100, max: 3000, targetMs: 50)
        sizer.record(keys: 1000, durationMs: 1)
        #expect(sizer.size == 2000)
        sizer.record(keys: 2000, durationMs: 1)
        #expect(sizer.size == 3000)
    }

    @Test("a sudden slowdown shrinks at once; a timeout halves; min holds")
    func sizerSlowdown() {
        var sizer = BatchSizer(initial: 1000, min: 100, max: 50_000, targetMs: 50)
        for _ in 0..<10 { sizer.record(keys: sizer.size, durationMs: Double(sizer.size) * 0.01) }
        let before = sizer.size
        sizer.record(keys: before, durationMs: Double(before) * 0.1) // ten times slower
        #expect(sizer.size <= before / 9)
        let shrunk = sizer.size
        sizer.halve()
        #expect(sizer.size == max(100, shrunk / 2))
        for _ in 0..<10 { sizer.halve() }
        #expect(sizer.size == 100)
    }

    @Test("a run's first small batches do not hold the size below the target: it is reached in a few batches")
    func sizerRampUp() {
        var sizer = BatchSizer(initial: 1000, min: 100, max: 50_000, targetMs: 50)
        // 3 ms a batch of fixed cost (round trips, the commit) and 0.003 ms a key: 15,667 keys fill 50 ms.
        var sizes: [Int] = []
        for _ in 0..<10 {
            sizes.append(sizer.size)
            sizer.record(keys: sizer.size, durationMs: 3 + Double(sizer.size) * 0.003)
        }
        // Before, the 1,000-key batch's cost per key (6 µs) held the size at 8,333 for 20 batches.
        #expect(sizes.allSatisfy { $0 <= 15_667 + 200 }, "sizes \(sizes)")
        #expect(sizer.size >= 14_000, "size after 10 batches \(sizer.size), sizes \(sizes)")
    }

    @Test("noisy timings stay near the target")
    func sizerNoisy() {
        var sizer = BatchSizer(initial: 1000, min: 100, max: 50_000, targetMs: 50)
        var generator = SplitMix(seed: 7)
        var durations: [Double] = []
        for _ in 0..<200 {
            let noise = 0.7 + 0.6 * generator.nextDouble()
            let ms = Double(sizer.size) * 0.01 * noise
            durations.append(ms)
            sizer.record(keys: sizer.size, durationMs: ms)
        }
        let tail = durations.suffix(150).sorted()
        // Sized for the tail: the 90th percentile at the target (±15 %), the median below it.
        let p90 = tail[Int(0.9 * Double(tail.count)) - 1]
        #expect(abs(p90 - 50) < 7.5, "p90 \(p90) ms")
        #expect(tail[tail.count / 2] < 50 && tail[tail.count / 2] > 30)
        #expect(tail.last! < 50 * 1.5)
    }

    @Test("retry decisions by SQLSTATE, attempts and jittered backoff")
    func retryPolicy() {
        let policy = RetryPolicy(maxAttempts: 4, baseMs: 100, capMs: 1000)
        let lock = PostgresError(code: .lockNotAvailable, message: "lock")
        #expect(policy.decide(lock, attempt: 1, random: 1) == .retry(reason: .lockTimeout, delayMs: 100, halveBatch: false, reconnect: false))
        #expect(policy.decide(lock, attempt: 3, random: 0.5) == .retry(reason: .lockTimeout, delayMs: 200, halveBatch: false, reconnect: false))
        #expect(policy.decide(lock, attempt: 4, random: 0.5) == .fail(exhausted: true))
        #expect(policy.decide(PostgresError(code: .queryCanceled, message: "t"), attempt: 1, random: 0) == .retry(reason: .statementTimeout, delayMs: 0, halveBatch: true, reconnect: false))
        #expect(policy.decide(PostgresError(code: .adminShutdown, message: "t"), attempt: 2, random: 1) == .retry(reason: .connectionLost, delayMs: 200, halveBatch: false, reconnect: true))
        #expect(policy.decide(PostgresError(code: .uniqueViolation, message: "u"), attempt: 1, random: 0) == .fail(exhausted: false))
        #expect(policy.delay(attempt: 30, random: 1) == 1000)
    }

    @Test("the token bucket holds the rate over time")
    func rateLimiter() {
        var limiter = RateLimiter(rowsPerSecond: 1000)
        var now = 0.0
        var rows = 0
        while now < 10 {
            now += limiter.consume(rows: 250, now: now) + 0.01
            rows += 250
        }
        #expect(abs(Double(rows) / now - 1000) / 1000 < 0.05)
        var unlimited = RateLimiter(rowsPerSecond: 0)
        #expect(unlimited.consume(rows: 1_000_000, now: 0) == 0)
    }

    @Test("JSON event lines escape text and keep the contract's fields")
    func eventJSON() {
        let event = RunEvent(.batch(.init(rows: 5, batchSize: 10, keys: 10, duration: .milliseconds(1.5), attempt: 1, lastKey: ["a\nb"], range: 0, rowsDone: 5,
                                          runRows: 5, nextBatchSize: 20, bound: .counted, worker: 0)), job: "j\"1")
        let line = event.jsonLine
        #expect(line.contains(#""event":"batch","job":"j\"1","rows":5,"batch_size":10,"keys":10,"duration_ms":1.500,"attempt":1,"last_key":["a\nb"]"#))
        #expect(!line.contains("\n"))
    }
}

/// A small deterministic generator for noisy synthetic timings.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func nextDouble() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }
}

@Suite("Range splitting")
struct RangeSplitterTests {
    @Test("range count: a few minutes of work each, at least four per worker")
    func counts() {
        #expect(RangeSplitter.rangeCount(estimatedRows: 2_000_000, workers: 1) == 4)
        #expect(RangeSplitter.rangeCount(estimatedRows: 2_000_000, workers: 4) == 16)
        #expect(RangeSplitter.rangeCount(estimatedRows: 1_000_000_000, workers: 2) == 100)
        #expect(RangeSplitter.rangeCount(estimatedRows: nil, workers: 1) == 4)
        #expect(RangeSplitter.rangeCount(estimatedRows: 100_000_000_000, workers: 1) == 1024)
    }

    @Test("boundaries at even quantiles, without repeats for skewed keys")
    func boundaries() {
        let sample = (1...100).map { [String(format: "%03d", $0)] }
        #expect(RangeSplitter.boundaries(sample: sample, count: 4) == [["026"], ["051"], ["076"]])
        let skewed = Array(repeating: ["a"], count: 90) + (1...10).map { ["b\($0)"] }
        let b = RangeSplitter.boundaries(sample: skewed, count: 4)
        #expect(b == [["a"]])
        #expect(RangeSplitter.boundaries(sample: [], count: 4).isEmpty)
        #expect(RangeSplitter.boundaries(sample: sample, count: 1).isEmpty)
        #expect(RangeSplitter.samplePercent(estimatedRows: 2_000_000, pages: 20_000) == 1)
        #expect(RangeSplitter.samplePercent(estimatedRows: 1000, pages: 10) == 100)
        // Never analyzed (no estimate), or analyzed when small: the page count bounds the sample.
        #expect(abs(RangeSplitter.samplePercent(estimatedRows: nil, pages: 50_000) - 1) < 1e-9)
        #expect(abs(RangeSplitter.samplePercent(estimatedRows: 1000, pages: 50_000) - 1) < 1e-9)
    }

    @Test("upper-bound queries below a ceiling keep the parameter order last, ceiling, offset")
    func ceilingSQL() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [a, b]\nset: {c: 1}", file: "j.yaml")
        let sql = BatchStatements(spec: spec, key: [KeyColumn(name: "a", type: "int"), KeyColumn(name: "b", type: "text")])
        #expect(sql.upperBound(afterKey: true, belowCeiling: true).text.contains(#"WHERE ("a", "b") > ($1::int, $2::text) AND ("a", "b") <= ($3::int, $4::text) ORDER BY "t"."a", "t"."b" OFFSET $5 LIMIT 1"#))
        #expect(sql.upperBound(afterKey: false, belowCeiling: true).text.contains(#"WHERE ("a", "b") <= ($1::int, $2::text) ORDER BY "t"."a", "t"."b" OFFSET $3"#))
        #expect(sql.upperBound(afterKey: false, belowCeiling: false) == sql.upperBoundFromStart)
        #expect(sql.sampleKeys(percent: 2.5).contains(#"TABLESAMPLE SYSTEM (2.500000) ORDER BY "t"."a", "t"."b""#))
        #expect(!sql.sampleKeys(percent: 100).contains("TABLESAMPLE"))
    }

    @Test("a dense integer key's upper key comes from the span: at most B keys, bigint's end held, other keys counted")
    func spanSQL() throws {
        let spec = try JobSpec.parse(yaml: "name: j\ntable: t\nkey: [id]\nset: {c: 1}", file: "j.yaml")
        let bigint = BatchStatements(spec: spec, key: [KeyColumn(name: "id", type: "bigint")])
        let open = try #require(bigint.spanBound(belowCeiling: false))
        #expect(open.text.contains(#"WHERE "id" > $1::bigint AND "id" <= (CASE WHEN $1::bigint::bigint > 9223372036854775806 - $2::bigint THEN 9223372036854775807 ELSE $1::bigint::bigint + $2::bigint + 1 END) ORDER BY "t"."id" DESC LIMIT 1"#))
        #expect(open.text.contains(#"("id"::numeric - $1::bigint::numeric)::bigint AS walked"#))
        // Parameters in upperBound's order: last key, ceiling, offset.
        #expect(try #require(bigint.spanBound(belowCeiling: true)).text.contains(#""id" > $1::bigint AND "id" <= $2::bigint AND "id" <= (CASE WHEN $1::bigint::bigint > 9223372036854775806 - $3::bigint"#))
        #expect(BatchStatements(spec: spec, key: [KeyColumn(name: "id", type: "integer")]).spanBound(belowCeiling: false)?.text.contains("$1::integer::bigint") == true)
        for other in [[KeyColumn(name: "id", type: "uuid")], [KeyColumn(name: "id", type: "numeric")], [KeyColumn(name: "a", type: "bigint"), KeyColumn(name: "b", type: "bigint")]] {
            #expect(BatchStatements(spec: spec, key: other).spanBound(belowCeiling: false) == nil)
        }
    }

    @Test("the span is used while the key, as last counted, is dense; counted again every 16 batches and after an empty span")
    func keyDensity() {
        var density = KeyDensity()
        #expect(!density.bySpan)                                   // nothing counted yet
        density.counted(keys: 10_000, lower: 0, upper: 10_000)
        #expect(density.bySpan && density.density == 1)
        for _ in 0..<KeyDensity.recountEvery - 1 { density.spanned() }
        #expect(density.bySpan)
        density.spanned()
        #expect(!density.bySpan)                                   // time to count again
        density.counted(keys: 10_000, lower: 10_000, upper: 20_500) // 95 % dense
        #expect(density.bySpan)
        density.counted(keys: 10_000, lower: 20_500, upper: 40_500) // half the keys deleted
        #expect(!density.bySpan && density.density == 0.5)
        density.counted(keys: 10_000, lower: 40_500, upper: 50_500)
        density.emptySpan()                                        // a gap wider than B
        #expect(!density.bySpan && density.density == nil)
        density.counted(keys: 0, lower: 1, upper: 1)                // nothing to learn from
        #expect(density.density == nil)
    }
}
