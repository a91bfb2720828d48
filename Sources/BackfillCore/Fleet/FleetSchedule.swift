/// Which targets of a fleet run start when: pure, so that the rules are tested without a
/// database. The runner asks `startable()` whenever a target starts or ends.
///
/// - At most `concurrency` targets run at once, and at most `perHost` on one server.
/// - The canary runs alone first; the others start only once it is done (exit 0). A canary that
///   does not finish ends the fleet, whatever `on_target_failure` says.
/// - After a target fails (exit 1 or 2), `stop` starts no new target; `continue` goes on.
///   A target stopped (3) or held by another runner (4) is not a failure of the fleet.
/// - Targets start in file order; one its server's limit holds back is passed over for a later
///   one on another server, and starts when its server has room.
public struct FleetSchedule: Sendable, Hashable {
    public enum Phase: Sendable, Hashable {
        case waiting, running
        case finished(exitCode: Int32)
    }

    public let servers: [String]
    public let concurrency: Int
    public let perHost: Int?
    public let canary: Int?
    public let onFailure: TargetFailurePolicy
    public private(set) var phases: [Phase]
    /// No target starts any more: a signal, `--max-runtime`, or a failure with `stop`.
    public private(set) var halted = false

    /// - Parameters:
    ///   - servers: each target's server (`FleetTarget.server`), in file order.
    ///   - canary: the canary's place in `servers`.
    public init(servers: [String], concurrency: Int, perHost: Int? = nil, canary: Int? = nil, onFailure: TargetFailurePolicy = .stop) {
        self.servers = servers
        self.concurrency = max(1, concurrency)
        self.perHost = perHost
        self.canary = canary
        self.onFailure = onFailure
        self.phases = Array(repeating: .waiting, count: servers.count)
    }

    public init(_ file: TargetsFile) {
        self.init(servers: file.targets.map(\.server), concurrency: file.concurrency, perHost: file.perHost,
                  canary: file.canary.flatMap { name in file.targets.firstIndex { $0.name == name } }, onFailure: file.onTargetFailure)
    }

    var running: [Int] { phases.indices.filter { phases[$0] == .running } }

    /// The targets to start now, in order; each is marked running.
    public mutating func startable() -> [Int] {
        guard !halted else { return [] }
        if let canary {
            switch phases[canary] {
            case .waiting:
                phases[canary] = .running
                return [canary]
            case .running: return []
            case .finished(let code) where code != 0: return []
            case .finished: break
            }
        }
        var started: [Int] = []
        var count = running.count
        var perServer: [String: Int] = [:]
        for index in running { perServer[servers[index], default: 0] += 1 }
        for index in phases.indices where phases[index] == .waiting && count < concurrency {
            if let perHost, perServer[servers[index], default: 0] >= perHost { continue }
            phases[index] = .running
            perServer[servers[index], default: 0] += 1
            count += 1
            started.append(index)
        }
        return started
    }

    /// A target ended with the exit code a single run would have given.
    public mutating func finished(_ index: Int, exitCode: Int32) {
        phases[index] = .finished(exitCode: exitCode)
        if Self.isFailure(exitCode) && onFailure == .stop { halted = true }
        if index == canary && exitCode != 0 { halted = true }
    }

    /// Starts nothing more (a signal or `--max-runtime`); the running targets finish.
    public mutating func halt() { halted = true }

    /// Whether nothing runs and nothing more will start.
    public var isOver: Bool {
        running.isEmpty && (halted || !phases.contains(.waiting) || canaryBlocks)
    }

    private var canaryBlocks: Bool {
        guard let canary, case .finished(let code) = phases[canary] else { return false }
        return code != 0
    }

    /// Exit 1 (failed) or 2 (invalid) count against `on_target_failure`.
    public static func isFailure(_ exitCode: Int32) -> Bool { exitCode == 1 || exitCode == 2 }
}

/// The fleet's exit code, from each target's in file order (nil: the target never started).
///
/// 0 when every target is done; otherwise the code a single run would have given for the first
/// target, in file order, that ran and did not finish (2 invalid, 1 failed, 3 stopped, 4 held);
/// when every target that ran is done but some never started (after a failure with `stop`, a
/// signal, `--max-runtime`, a canary that did not finish), 3: run again to go on.
public enum FleetExit {
    public static func code(_ codes: [Int32?]) -> Int32 {
        if let first = codes.first(where: { ($0 ?? 0) != 0 }) { return first! }
        return codes.contains(nil) ? 3 : 0
    }
}
