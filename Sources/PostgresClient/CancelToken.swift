import CLibPQ


/// Cancels the statement running on a connection. Safe to use from any thread and from a signal
/// handler's dispatch source: libpq documents `PQcancel` as thread-safe, and the token owns its own
/// `PGcancel` object, independent of the connection's.
public final class CancelToken: @unchecked Sendable {
    private let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { PQfreeCancel(handle) }

    /// Asks the server to cancel the statement in flight. Returns false if the request could not
    /// be sent; a request that arrives when nothing runs does nothing.
    @discardableResult
    public func cancel() -> Bool {
        var buffer = [CChar](repeating: 0, count: 256)
        return PQcancel(handle, &buffer, Int32(buffer.count)) == 1
    }
}
