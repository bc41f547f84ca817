import NIOCore
import NIOPosix
import Tether

/// Listening and dialing on loopback, for the demo and the benchmark.
enum LoopbackTransport {
    /// Listens on 127.0.0.1 (port 0 = any); every connection runs Tether as the acceptor and hands
    /// inbound streams to `serve` on the event loop.
    static func listen(
        group: any EventLoopGroup, port: Int = 0, configuration: TetherConnectionHandler.Configuration,
        onConnection: @escaping @Sendable (TetherConnection) -> Void = { _ in },
        serve: @escaping @Sendable (TetherStreamHandle) -> Void
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    onConnection(
                        try TetherConnection.configure(
                            channel: channel, configuration: configuration, inboundStreamHandler: serve))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
    }

    /// Dials `address` and runs Tether as the dialer.
    static func dial(
        group: any EventLoopGroup, to address: SocketAddress, configuration: TetherConnectionHandler.Configuration,
        serve: (@Sendable (TetherStreamHandle) -> Void)? = nil
    ) async throws -> TetherConnection {
        let connection = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TetherConnection.configure(channel: channel, configuration: configuration, inboundStreamHandler: serve)
                }
            }
        _ = try await connection.ready()
        return connection
    }
}
