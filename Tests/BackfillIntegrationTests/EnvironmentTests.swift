import BackfillCore
import BackfillTestSupport
import Foundation
import LocalPostgres
import PostgresClient
import Testing

/// Every `run` flag has a BACKFILL_<FLAG> variable: it is honoured, its flag beats it, and a
/// value that does not parse exits 2 naming the variable, before anything connects.
@Suite("Configuration from the environment")
struct EnvironmentTests {
    @Test("an invalid value exits 2 naming the variable and what it expects", arguments: [
        ("BACKFILL_WORKERS", "abc", "expected a whole number"),
        ("BACKFILL_WORKERS", "0", "must be from 1 to 1024"),
        ("BACKFILL_MAX_RUNTIME", "3", "has no unit"),
        ("BACKFILL_MAX_RUNTIME", "soon", "not a duration"),
        ("BACKFILL_LOG_FORMAT", "xml", "expected text or json"),
        ("BACKFILL_PROGRESS", "sometimes", "expected auto or always or never"),
        ("BACKFILL_METRICS_PORT", "http", "expected a whole number"),
        ("BACKFILL_METRICS_PORT", "70000", "must be from 1 to 65535"),
        ("BACKFILL_METRICS_FILE", "/nonexistent/dir/backfill.prom", "not writable"),
        ("BACKFILL_RESTART", "maybe", "expected true or false"),
        ("BACKFILL_JOIN", "2", "expected true or false"),
        ("BACKFILL_WAIT_FOR_REQUIREMENTS", "3", "has no unit"),
    ])
    func invalid(variable: String, value: String, expected: String) throws {
        let run = try backfill(["run", packageRoot + "/jobs/demo.yaml"], environment: [variable: value])
        #expect(run.code == 2, "\(run.err)")
        #expect(run.err.contains(variable), "\(run.err)")
        #expect(run.err.contains(expected), "\(run.err)")
    }

    @Test("the flag beats an invalid variable: the variable is not even read")
    func flagBeatsInvalidVariable() throws {
        let run = try backfill(["run", "--workers", "1", "--max-runtime", "1s", "/nonexistent/job.yaml"],
                               environment: ["BACKFILL_WORKERS": "abc", "BACKFILL_MAX_RUNTIME": "3"])
        #expect(run.code == 2)
        #expect(!run.err.contains("BACKFILL_"), "\(run.err)")
        #expect(run.err.contains("does not exist"), "\(run.err)")
    }

    @Test("--help names each variable")
    func help() throws {
        let run = try backfill(["run", "--help"])
        for variable in ["BACKFILL_DATABASE", "BACKFILL_SCHEMA", "BACKFILL_MAX_RUNTIME", "BACKFILL_WORKERS", "BACKFILL_LOG_FORMAT",
                         "BACKFILL_PROGRESS", "BACKFILL_METRICS_FILE", "BACKFILL_METRICS_PORT", "BACKFILL_RESTART", "BACKFILL_JOIN",
                         "BACKFILL_WAIT_FOR_REQUIREMENTS"] {
            #expect(run.out.contains(variable), "\(variable) missing from run --help")
        }
    }

    @Test("BACKFILL_DATABASE names the database; --database beats it; DATABASE_URL comes after both")
    func database() throws {
        let (url, _) = try itemsDatabase("envdb", rows: 1_000)
        let job = try jobFile(itemsJob(name: "envdb"))
        let nowhere = "postgresql://nobody@127.0.0.1:9/none"
        #expect(try backfill(["run", job], environment: ["BACKFILL_DATABASE": url, "DATABASE_URL": nowhere]).code == 0)
        let flagged = try backfill(["run", job, "--database", nowhere], environment: ["BACKFILL_DATABASE": url])
        #expect(flagged.code == 1 && flagged.err.contains("127.0.0.1"), "\(flagged.err)")
    }

    @Test("BACKFILL_SCHEMA names the checkpoint store; --schema beats it")
    func schema() throws {
        let (url, db) = try itemsDatabase("envschema", rows: 1_000)
        let job = try jobFile(itemsJob(name: "envschema"))
        #expect(try backfill(["run", job, "--database", url], environment: ["BACKFILL_SCHEMA": "from_env"]).code == 0)
        let status = try backfill(["status", "--database", url], environment: ["BACKFILL_SCHEMA": "from_env"])
        #expect(status.out.contains("envschema"), "\(status.out)")
        try db.execute("UPDATE items SET filled = NULL, writes = 0")
        #expect(try backfill(["run", job, "--database", url, "--schema", "from_flag"], environment: ["BACKFILL_SCHEMA": "from_env"]).code == 0)
        #expect(try db.query("SELECT count(*) AS n FROM from_flag.jobs").first?["n"].int64 == 1)
        #expect(try db.query("SELECT to_regnamespace('backfill') IS NULL AS clean").first?["clean"].bool == true)
    }

    @Test("BACKFILL_MAX_RUNTIME time-boxes the run (exit 3); --max-runtime beats it")
    func maxRuntime() throws {
        let (url, db) = try itemsDatabase("envruntime", rows: 40_000)
        let job = try jobFile(itemsJob(name: "envruntime", extra: "throttle: {max_rows_per_second: 20000}"))
        let boxed = try backfill(["run", job, "--database", url], environment: ["BACKFILL_MAX_RUNTIME": "500ms"])
        #expect(boxed.code == 3, "\(boxed.err)")
        let finished = try backfill(["run", job, "--database", url, "--max-runtime", "10m"], environment: ["BACKFILL_MAX_RUNTIME": "500ms"])
        #expect(finished.code == 0, "\(finished.err)")
        try expectExactlyOnce(db, rows: 40_000)
    }

    @Test("BACKFILL_WORKERS sets the workers; --workers beats it")
    func workers() throws {
        let (url, _) = try itemsDatabase("envworkers", rows: 5_000)
        let started: ([String], [String: String]) throws -> Int? = { arguments, environment in
            let run = try backfill(["run", try jobFile(itemsJob(name: "envworkers")), "--database", url, "--log-format", "json", "--restart"] + arguments, environment: environment)
            #expect(run.code == 0, "\(run.err)")
            return run.events.first { $0["event"] as? String == "start" }?["workers"] as? Int
        }
        #expect(try started([], ["BACKFILL_WORKERS": "3"]) == 3)
        #expect(try started(["--workers", "2"], ["BACKFILL_WORKERS": "3"]) == 2)
    }

    /// Runs a small job with `variable` set, then again (with --restart) with `flag` given as
    /// well; both runs must finish. Returns the two runs.
    private func honouredThenBeaten(_ label: String, _ variable: String, _ value: String, flag: [String]) throws -> (variable: CLIRun, flag: CLIRun) {
        let (url, _) = try itemsDatabase(label, rows: 5_000)
        let job = try jobFile(itemsJob(name: label))
        let fromVariable = try backfill(["run", job, "--database", url], environment: [variable: value])
        #expect(fromVariable.code == 0, "\(fromVariable.err)")
        let fromFlag = try backfill(["run", job, "--database", url, "--restart"] + flag, environment: [variable: value])
        #expect(fromFlag.code == 0, "\(fromFlag.err)")
        return (fromVariable, fromFlag)
    }

    @Test("BACKFILL_LOG_FORMAT=json gives JSON lines; --log-format text beats it")
    func logFormat() throws {
        let (json, text) = try honouredThenBeaten("envlog", "BACKFILL_LOG_FORMAT", "json", flag: ["--log-format", "text"])
        #expect(!json.events.isEmpty && json.events.count == json.err.split(separator: "\n").count, "\(json.err)")
        #expect(text.events.isEmpty && text.err.contains("summary: envlog: done"), "\(text.err)")
    }

    @Test("BACKFILL_PROGRESS=always draws the progress line without a terminal; --progress never beats it")
    func progress() throws {
        let (drawn, quiet) = try honouredThenBeaten("envprogress", "BACKFILL_PROGRESS", "always", flag: ["--progress", "never"])
        #expect(drawn.err.contains("\r\u{1B}[2K"), "\(drawn.err)")
        #expect(!quiet.err.contains("\u{1B}[2K"), "\(quiet.err)")
    }

    @Test("BACKFILL_METRICS_FILE writes the metrics there; --metrics-file beats it")
    func metricsFile() throws {
        let (url, _) = try itemsDatabase("envmetrics", rows: 5_000)
        let job = try jobFile(itemsJob(name: "envmetrics"))
        let fromEnv = NSTemporaryDirectory() + "backfill-env-\(UUID().uuidString).prom"
        let fromFlag = NSTemporaryDirectory() + "backfill-flag-\(UUID().uuidString).prom"
        defer { unlink(fromEnv); unlink(fromFlag) }
        #expect(try backfill(["run", job, "--database", url], environment: ["BACKFILL_METRICS_FILE": fromEnv]).code == 0)
        #expect(try String(contentsOfFile: fromEnv, encoding: .utf8).contains(#"backfill_rows_total{backfill_job="envmetrics"} 5000"#))
        unlink(fromEnv)
        #expect(try backfill(["run", job, "--database", url, "--restart", "--metrics-file", fromFlag], environment: ["BACKFILL_METRICS_FILE": fromEnv]).code == 0)
        #expect(FileManager.default.fileExists(atPath: fromFlag))
        #expect(!FileManager.default.fileExists(atPath: fromEnv))
    }

    @Test("BACKFILL_METRICS_PORT serves /metrics there; --metrics-port beats it")
    func metricsPort() throws {
        let (url, _) = try itemsDatabase("envport", rows: 40_000)
        let job = try jobFile(itemsJob(name: "envport", extra: "throttle: {max_rows_per_second: 20000}"))
        let envPort = try LocalPostgres.freePort()
        var flagPort = try LocalPostgres.freePort()
        while flagPort == envPort { flagPort = try LocalPostgres.freePort() }
        let served = try CLIProcess(["run", job, "--database", url], environment: ["BACKFILL_METRICS_PORT": String(envPort)])
        #expect(waitFor(20) { httpGet(port: envPort, path: "/metrics")?.contains("backfill_rows_total") == true })
        #expect(served.wait(timeout: 60) == 0, "\(served.stderr)")
        let flagged = try CLIProcess(["run", job, "--database", url, "--restart", "--metrics-port", String(flagPort)], environment: ["BACKFILL_METRICS_PORT": String(envPort)])
        #expect(waitFor(20) { httpGet(port: flagPort, path: "/metrics")?.contains("backfill_rows_total") == true })
        #expect(httpGet(port: envPort, path: "/metrics") == nil)
        #expect(flagged.wait(timeout: 60) == 0, "\(flagged.stderr)")
    }

    @Test("BACKFILL_RESTART=true starts a finished job over; --no-restart beats it")
    func restart() throws {
        let (url, db) = try itemsDatabase("envrestart", rows: 2_000)
        let job = try jobFile(itemsJob(name: "envrestart"))
        #expect(try backfill(["run", job, "--database", url]).code == 0)
        #expect(try backfill(["run", job, "--database", url, "--no-restart"], environment: ["BACKFILL_RESTART": "true"]).code == 0)
        try expectExactlyOnce(db, rows: 2_000)
        #expect(try backfill(["run", job, "--database", url], environment: ["BACKFILL_RESTART": "true"]).code == 0)
        #expect(try db.query("SELECT count(*) AS n FROM items WHERE writes = 2").first?["n"].int64 == 2_000)
    }

    @Test("BACKFILL_JOIN=true joins a job another runner holds; --no-join beats it (exit 4)")
    func join() throws {
        let (url, db) = try itemsDatabase("envjoin", rows: 100_000)
        let job = try jobFile(itemsJob(name: "envjoin", extra: "throttle: {max_rows_per_second: 40000}"))
        let first = try CLIProcess(["run", job, "--database", url])
        #expect(waitFor(30) { rowsDone(db, job: "envjoin") > 0 })
        let refused = try backfill(["run", job, "--database", url, "--no-join"], environment: ["BACKFILL_JOIN": "true"])
        #expect(refused.code == 4, "\(refused.err)")
        let joined = try backfill(["run", job, "--database", url, "--log-format", "json"], environment: ["BACKFILL_JOIN": "yes"])
        #expect(joined.code == 0, "\(joined.err)")
        #expect(joined.events.contains { $0["event"] as? String == "batch" })
        #expect(first.wait(timeout: 60) == 0, "\(first.stderr)")
        try expectExactlyOnce(db, rows: 100_000)
    }
}
