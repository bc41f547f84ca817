import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether

/// Listening on and connecting to an ``Endpoint`` with the options a splice needs (reads only
/// when the stream has room, half-closes passed through: ``StreamSplicer``).
enum EndpointSockets {
    /// Binds `endpoint`; every accepted connection is handed to `accepted` on its event loop.
    /// A Unix socket's stale file is removed first.
    static func listen(
        _ endpoint: Endpoint, group: any EventLoopGroup, accepted: @escaping @Sendable (any Channel) -> Void
    ) async throws -> any Channel {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(StreamSplicer.autoRead, value: false)
            .childChannelOption(StreamSplicer.halfClosure, value: true)
            .childChannelInitializer { channel in
                accepted(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        switch endpoint {
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        }
    }

    /// Connects to `endpoint` (a name is resolved now), ready to be spliced.
    static func connect(_ endpoint: Endpoint, group: any EventLoopGroup) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(StreamSplicer.autoRead, value: false)
            .channelOption(StreamSplicer.halfClosure, value: true)
            .connectTimeout(.seconds(10))
        switch endpoint {
        case .tcp(let host, let port):
            return bootstrap.connect(host: host, port: port)
        case .unix(let path):
            return bootstrap.connect(unixDomainSocketPath: path)
        }
    }

    /// Connects `stream` to `endpoint` and splices them; a target that cannot be reached refuses
    /// the stream with `CONNECT_ERROR` (our state, never counted against the peer: spec §12).
    static func splice(
        _ stream: TetherStreamHandle, to endpoint: Endpoint, group: any EventLoopGroup
    ) -> EventLoopFuture<StreamSplicer.Outcome?> {
        self.connect(endpoint, group: group).flatMap { channel in
            channel.eventLoop.flatSubmit { StreamSplicer.splice(channel, with: stream).map { Optional($0) } }
        }.flatMapError { _ in
            stream.eventLoop.submit {
                stream.refuse(.connectError)
                return nil
            }
        }
    }

    /// Splices an accepted `channel` with the stream `opening` yields; closes it when the stream
    /// cannot be opened (no credit, the connection went away).
    static func splice(_ channel: any Channel, toStreamOpening opening: EventLoopFuture<TetherStreamHandle>) {
        opening.hop(to: channel.eventLoop).whenComplete { result in
            switch result {
            case .success(let stream): _ = StreamSplicer.splice(channel, with: stream)
            case .failure: channel.close(promise: nil)
            }
        }
    }

    /// Runs `service` with `listeners` open; a graceful shutdown closes them first, so no new
    /// connection is accepted while the service drains.
    static func run(_ service: some Service, closingOnShutdown listeners: [any Channel]) async {
        await withGracefulShutdownHandler {
            try? await service.run()
        } onGracefulShutdown: {
            for listener in listeners { listener.close(promise: nil) }
        }
        for listener in listeners { try? await listener.close() }
    }
}
