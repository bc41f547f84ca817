#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The fields of Linux's `struct tcp_info` (linux/tcp.h) that the transport reads. The kernel
/// copies as much of the struct as is asked for and NIO zeroes the rest, so on a kernel older
/// than a field the field reads 0.
struct TCPInfo {
    /// Octets the peer has acknowledged (`tcpi_bytes_acked`, offset 120; Linux 4.1).
    var bytesAcked: UInt64
    /// Octets TCP has received on the connection (`tcpi_bytes_received`, offset 128; Linux 4.1).
    var bytesReceived: UInt64

    /// `struct tcp_info` up to and including `tcpi_bytes_received`: 17 eight-octet words.
    private typealias Prefix = (
        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
    )

    /// Reads the socket's `TCP_INFO`; nil where the channel is not a socket or there is none.
    /// Call on the channel's event loop.
    static func read(_ channel: any Channel) -> TCPInfo? {
        #if os(Linux)
        guard let socket = channel as? any SocketOptionProvider else { return nil }
        var info: TCPInfo?
        socket.unsafeGetSocketOption(level: .tcp, name: .init(rawValue: TCP_INFO))
            .assumeIsolated().whenSuccess { (words: Prefix) in
                info = TCPInfo(bytesAcked: words.15, bytesReceived: words.16)
            }
        return info
        #else
        return nil
        #endif
    }
}
