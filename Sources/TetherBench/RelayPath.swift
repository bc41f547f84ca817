import NIOCore
import NIOPosix
import Tether
import TetherRelay

/// The relay path of `tether bench`: a local TCP connection spliced to a stream at this end, the
/// stream spliced to a TCP sink at the far end — what the relay daemons do with every connection
/// they carry (``StreamSplicer``), measured with the same pusher and sink as the raw rows.
enum RelayPath {
    /// The service the far end splices to its sink.
    static let service = "relay"

    /// This end: a listener on loopback whose every connection becomes a BULK stream on
    /// `connection`, spliced.
    static func entrance(group: any EventLoopGroup, connection: TetherConnection) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                connection.openStreamHandle(service: Self.service, class: .bulk).hop(to: channel.eventLoop).map { handle in
                    _ = StreamSplicer.splice(channel, with: handle)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// The far end: a new connection to the sink for the stream, spliced; refused with
    /// `CONNECT_ERROR` when the sink cannot be reached.
    static func exit(_ handle: TetherStreamHandle, to sink: SocketAddress, group: any EventLoopGroup) {
        ClientBootstrap(group: group)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(to: sink)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    channel.eventLoop.execute { _ = StreamSplicer.splice(channel, with: handle) }
                case .failure:
                    handle.eventLoop.execute { handle.refuse(.connectError) }
                }
            }
    }

    /// `connections` pushers through the entrance share `octets`; the clock runs from the first
    /// connect to the last sink's answer.
    static func push(group: any EventLoopGroup, to entrance: SocketAddress, connections: Int, octets: Int, chunk: ByteBuffer)
        async throws -> Double
    {
        let started = NIODeadline.now()
        try await withThrowingTaskGroup(of: Double.self) { pushers in
            for index in 0..<connections {
                let share = octets / connections + (index < octets % connections ? 1 : 0)
                pushers.addTask { try await RawTCP.push(group: group, to: entrance, octets: share, chunk: chunk, tls: nil) }
            }
            try await pushers.waitForAll()
        }
        return Double((NIODeadline.now() - started).nanoseconds) / 1e9
    }
}
