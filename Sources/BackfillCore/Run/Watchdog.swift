import Foundation
import PostgresClient
import Synchronization

/// Watches the batches in flight from a connection of its own and cancels one that makes a live
/// session wait on its locks longer than `throttle.blocking_wait_ms`: every ~10 ms it asks which
/// sessions wait (`pg_locks.waitstart`) on a lock that a batch's backend holds
/// (`pg_blocking_pids`). The cancelled batch rolls back, and the worker halves it and rests
/// before trying again, so the worst live wait is bounded by the setting, not by the batch's size
/// or by how busy the machine is. One per run; workers register their batch while it runs, and
/// only batches that have run about as long as the limit are asked about.
final class Watchdog: Sendable {
    private struct Watched: Sendable {
        var pid: Int32
        var token: CancelToken
        /// When the batch began: a session can only have waited on its locks since then.
        var since: ContinuousClock.Instant
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
        watched.withLock { $0[worker] = Watched(pid: pid, token: token, since: .now) }
    }

    /// The batch's transaction runs on the server backend `pid`: through a pooler it is not the
    /// one libpq was told at connection, and in transaction mode it may change per transaction.
    func runsOn(_ worker: Int, pid: Int32) {
        watched.withLock { $0[worker]?.pid = pid }
    }

    /// The batch ended. Returns how long the waiter had waited if the watchdog cancelled it.
    func unwatch(_ worker: Int) -> Double? {
        watched.withLock { $0.removeValue(forKey: worker)?.firedAfterMs }
    }

    /// Stops the thread and closes its connection; later calls return at once.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }

    /// Sessions waiting on a heavyweight lock come from `pg_stat_activity` (its wait event), which
    /// is cheap to read every 10 ms; only for those does it ask who blocks them and since when
    /// (`pg_blocking_pids`, `pg_locks.waitstart`), which take the lock manager's partition locks.
    static let query = """
        SELECT b.pid, max(w.waited_ms)::float8 AS waited_ms
        FROM (SELECT a.pid, (SELECT extract(epoch FROM clock_timestamp() - min(l.waitstart)) * 1000
                             FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS waited_ms
              FROM pg_stat_get_activity(NULL) a WHERE a.wait_event_type = 'Lock') w
        JOIN unnest($1::int[]) AS b(pid) ON b.pid = ANY (pg_blocking_pids(w.pid))
        WHERE w.waited_ms IS NOT NULL
        GROUP BY b.pid
        """

    private func loop(conninfo: String?, applicationName: String) {
        var db: Connection?
        while !stopped.load(ordering: .acquiring) {
            // A batch's locks are its own transaction's, so nobody can have waited on them longer
            // than the batch has run: a batch younger than the limit (less one poll) needs no
            // query, and short batches cost the server nothing.
            let now = ContinuousClock.now
            let pids = watched.withLock {
                $0.values.filter { $0.firedAfterMs == nil && (now - $0.since).milliseconds >= limitMs - Double(intervalMs) }.map(\.pid)
            }
            if pids.isEmpty {
                usleep(useconds_t(intervalMs * 1000))
                continue
            }
            do {
                if db == nil || db?.isOpen == false {
                    db = try SessionPins.connect(conninfo, applicationName: applicationName)
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
