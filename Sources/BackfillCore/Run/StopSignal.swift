import PostgresClient
import Synchronization

/// Why a run stops before its job is done.
public enum StopReason: String, Sendable, Hashable {
    case signal, timeBox = "time_box", paused, cancelled
    /// The run's lease was lost (taken over, released by `backfill unlock`, its session ended)
    /// or the job was started over with another job file: every worker stops after its batch.
    case leaseLost = "lease_lost"
}

/// Lets another thread or a signal source stop a run: the flag is read between batches, and
/// `cancelInFlight` interrupts the statement running now.
public final class StopSignal: Sendable {
    private let requested = Atomic<Bool>(false)
    private let inFlight = Mutex<[Int: CancelToken]>([:])

    public init() {}

    /// Asks the run to stop after the batch in flight.
    public func request() { requested.store(true, ordering: .releasing) }

    public var isRequested: Bool { requested.load(ordering: .acquiring) }

    /// Cancels the batch statements in flight, if any (one per worker); they roll back and the
    /// run stops.
    public func cancelInFlight() {
        inFlight.withLock { tokens in tokens.values.forEach { _ = $0.cancel() } }
    }

    func setInFlight(_ token: CancelToken?, worker: Int) { inFlight.withLock { $0[worker] = token } }
}
