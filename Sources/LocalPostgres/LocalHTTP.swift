import Foundation

/// A TCP connection to 127.0.0.1:`port`; nil when nothing listens.
public func tcpConnect(port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`, for the tests' servers (the metrics endpoint,
/// Prometheus' API): the whole response, status line and headers included, read until the server
/// closes (each read waits at most 10 s); nil when nothing listens.
public func httpGet(port: Int, path: String) -> String? {
    guard let fd = tcpConnect(port: port) else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = "GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n"
    _ = request.withCString { write(fd, $0, strlen($0)) }
    var data = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 16_384)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        data += buffer[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}

/// The status code and body of an HTTP response as `httpGet` returns it.
public func httpStatusAndBody(_ response: String) -> (status: Int, body: String)? {
    guard let split = response.range(of: "\r\n\r\n"), let code = Int(response.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return (code, String(response[split.upperBound...]))
}
