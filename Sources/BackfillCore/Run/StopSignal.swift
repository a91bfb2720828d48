import PostgresClient
import Synchronization

/// Why a run stops before its job is done.
public enum StopReason: String, Sendable, Hashable {
    case signal, timeBox = "time_box", paused, cancelled
    /// The run's lease was lost (taken over, released by `backfill unlock`, its session ended)
    /// or the job was started over with another job file: every worker stops after its batch.
    case leaseLost = "lease_lost"

    /// The stop an operator's word asks for: a paused or cancelled job stops its run; nil for
    /// every other state. The one place a job's state becomes a stop reason.
    public init?(jobState: JobState?) {
        switch jobState {
        case .paused: self = .paused
        case .cancelled: self = .cancelled
        default: return nil
        }
    }

    /// The state a job is left in by a run that stopped for this reason.
    public var jobState: JobState {
        switch self {
        case .paused: .paused
        case .cancelled: .cancelled
        case .signal, .timeBox, .leaseLost: .pending
        }
    }
}

/// Lets another thread or a signal source stop a run: the flag is read between batches, and
/// `cancelInFlight` interrupts the statement running now.
public final class StopSignal: Sendable {
    private let requested = Atomic<Bool>(false)
    private let inFlight = Mutex<[Int: CancelToken]>([:])
    /// Signals that follow this one (each target of a fleet run has its own, since its workers'
    /// statements are its own).
    private let children = Mutex<[StopSignal]>([])

    public init() {}

    /// A signal of its own that a request or cancel of this one reaches too.
    public func child() -> StopSignal {
        let child = StopSignal()
        children.withLock { $0.append(child) }
        if isRequested { child.request() }
        return child
    }

    /// Asks the run to stop after the batch in flight.
    public func request() {
        requested.store(true, ordering: .releasing)
        children.withLock { $0 }.forEach { $0.request() }
    }

    public var isRequested: Bool { requested.load(ordering: .acquiring) }

    /// Cancels the batch statements in flight, if any (one per worker); they roll back and the
    /// run stops.
    public func cancelInFlight() {
        inFlight.withLock { tokens in tokens.values.forEach { _ = $0.cancel() } }
        children.withLock { $0 }.forEach { $0.cancelInFlight() }
    }

    func setInFlight(_ token: CancelToken?, worker: Int) { inFlight.withLock { $0[worker] = token } }
}
