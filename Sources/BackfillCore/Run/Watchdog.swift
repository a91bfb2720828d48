import Foundation
import PostgresClient
import Synchronization

/// Watches the batches in flight from a connection of its own and cancels one that makes a live
/// session wait on its locks longer than `throttle.blocking_wait_ms`: every ~10 ms it asks which
/// sessions wait (`pg_locks.waitstart`) on a lock that a batch's backend holds
/// (`pg_blocking_pids`). The cancelled batch rolls back, and the worker halves it and rests
/// before trying again, so the worst live wait is bounded by the setting, not by the batch's size
/// or by how busy the machine is. One per run; workers register their batch while it runs.
final class Watchdog: Sendable {
    private struct Watched: Sendable {
        var pid: Int32
        var token: CancelToken
        /// How long the waiter had waited when the watchdog cancelled this batch.
        var firedAfterMs: Double?
    }

    let limitMs: Double
    let intervalMs: Int
    private let watched = Mutex<[Int: Watched]>([:])
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Starts the watchdog's thread and connection.
    init(conninfo: String?, applicationName: String, limitMs: Double, intervalMs: Int = 10) {
        self.limitMs = limitMs
        self.intervalMs = intervalMs
        let thread = Thread { [self] in
            defer { finished.signal() }
            loop(conninfo: conninfo, applicationName: applicationName)
        }
        thread.start()
    }

    /// A worker's batch starts on the backend `pid`; `token` cancels it.
    func watch(_ worker: Int, pid: Int32, token: CancelToken) {
        watched.withLock { $0[worker] = Watched(pid: pid, token: token) }
    }

    /// The batch ended. Returns how long the waiter had waited if the watchdog cancelled it.
    func unwatch(_ worker: Int) -> Double? {
        watched.withLock { $0.removeValue(forKey: worker)?.firedAfterMs }
    }

    /// Stops the thread and closes its connection.
    func stop() {
        stopped.store(true, ordering: .releasing)
        finished.wait()
    }

    static let query = """
        SELECT b.pid, max(extract(epoch FROM clock_timestamp() - l.waitstart) * 1000)::float8 AS waited_ms
        FROM unnest($1::int[]) AS b(pid)
        JOIN pg_locks l ON NOT l.granted AND l.waitstart IS NOT NULL AND b.pid = ANY (pg_blocking_pids(l.pid))
        GROUP BY b.pid
        """

    private func loop(conninfo: String?, applicationName: String) {
        var db: Connection?
        while !stopped.load(ordering: .acquiring) {
            let pids = watched.withLock { $0.values.filter { $0.firedAfterMs == nil }.map(\.pid) }
            if pids.isEmpty {
                usleep(useconds_t(intervalMs * 1000))
                continue
            }
            do {
                if db == nil || db?.isOpen == false {
                    db = try Connection(conninfo, applicationName: applicationName)
                }
                let array = "{" + pids.map(String.init).joined(separator: ",") + "}"
                for row in try db!.query(Self.query, [.text(array)]).rows {
                    guard let pid = row["pid"].int.map(Int32.init), let waited = row["waited_ms"].double, waited >= limitMs else { continue }
                    let token = watched.withLock { watched -> CancelToken? in
                        guard let (worker, entry) = watched.first(where: { $0.value.pid == pid && $0.value.firedAfterMs == nil }) else { return nil }
                        watched[worker]?.firedAfterMs = waited
                        return entry.token
                    }
                    token?.cancel()
                }
            } catch {
                db = nil
                usleep(200_000)  // the server is unreachable: the batches' own retries deal with it
            }
            usleep(useconds_t(intervalMs * 1000))
        }
        db?.close()
    }
}
