import NIOConcurrencyHelpers
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
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EarlyInput())
                    accepted(channel)
                }
            }
        return try await Self.bind(bootstrap, to: endpoint)
    }

    /// Binds `bootstrap` to a TCP or Unix endpoint (a stale socket file is replaced).
    static func bind(_ bootstrap: ServerBootstrap, to endpoint: Endpoint) async throws -> any Channel {
        switch endpoint {
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        }
    }

    /// Connects to `endpoint` (a name is resolved now), ready to be spliced.
    /// `initializer` sees each socket before its connect starts (to be able to abort it).
    static func connect(
        _ endpoint: Endpoint, group: any EventLoopGroup,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void> = { $0.eventLoop.makeSucceededVoidFuture() }
    ) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(StreamSplicer.autoRead, value: false)
            .channelOption(StreamSplicer.halfClosure, value: true)
            .connectTimeout(.seconds(10))
            .channelInitializer(initializer)
        switch endpoint {
        case .tcp(let host, let port):
            return bootstrap.connect(host: host, port: port)
        case .unix(let path):
            return bootstrap.connect(unixDomainSocketPath: path)
        }
    }

    /// Connects `stream` to `endpoint` on the stream's event loop (a socket on another loop would
    /// add a thread hop to each read and write) and splices them; a target that cannot be reached refuses
    /// the stream with `CONNECT_ERROR` (our state, never counted against the peer: spec §12).
    /// `preamble` (a PROXY v2 header) is written to the target before anything from the stream.
    /// A stream reset while its target is being connected (its opener gave up waiting for OPENED)
    /// aborts the connect.
    static func splice(
        _ stream: TetherStreamHandle, to endpoint: Endpoint, framing: StreamSplicer.Framing = .octets,
        preamble: ByteBuffer? = nil, observer: (@Sendable (ByteBuffer, Bool) -> Void)? = nil
    ) -> EventLoopFuture<StreamSplicer.Outcome?> {
        let connecting = ConnectingSocket()
        stream.eventLoop.execute {
            // Replaced by the splicer's own once connected.
            stream.onReadable = { if stream.failure != nil { connecting.abort() } }
        }
        return self.connect(endpoint, group: stream.eventLoop, initializer: connecting.started).flatMap { channel in
            // Reached: OPENED tells the opener (spec §5.8) — a hub's front door answers its client now.
            stream.eventLoop.execute { stream.acknowledge() }
            return channel.eventLoop.flatSubmit {
                if let preamble { channel.write(preamble, promise: nil) }
                return StreamSplicer.splice(channel, with: stream, framing: framing, observer: observer).map { Optional($0) }
            }
        }.flatMapError { _ in
            stream.eventLoop.submit {
                stream.refuse(.connectError)
                return nil
            }
        }
    }

    /// The socket a stream's target is being connected on, until its connect ends.
    private final class ConnectingSocket: Sendable {
        private enum State {
            case starting
            case connecting(any Channel)
            case aborted
        }

        private let state = NIOLockedValueBox(State.starting)

        /// The bootstrap's initializer: fails the connect when it was aborted already.
        @Sendable func started(_ channel: any Channel) -> EventLoopFuture<Void> {
            let aborted = self.state.withLockedValue { state in
                if case .aborted = state { return true }
                state = .connecting(channel)
                return false
            }
            return aborted ? channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) : channel.eventLoop.makeSucceededVoidFuture()
        }

        func abort() {
            let channel = self.state.withLockedValue { state -> (any Channel)? in
                defer { state = .aborted }
                if case .connecting(let channel) = state { return channel }
                return nil
            }
            channel?.close(promise: nil)
        }
    }

    /// Splices an accepted `channel` with the stream `opening` yields; closes it when the stream
    /// cannot be opened (no credit, no connection to a peer in time). What the socket delivered
    /// meanwhile (``EarlyInput``) goes to the stream first.
    /// Succeeds with the stream and how its splice ended; fails when it could not be opened.
    @discardableResult
    static func splice(
        _ channel: any Channel, toStreamOpening opening: EventLoopFuture<TetherStreamHandle>
    ) -> EventLoopFuture<(TetherStreamHandle, StreamSplicer.Outcome)> {
        let spliced = channel.eventLoop.makePromise(of: (TetherStreamHandle, StreamSplicer.Outcome).self)
        opening.whenFailure { spliced.fail($0) }
        self.join(channel, toStreamOpening: opening) { channel, stream in
            StreamSplicer.splice(channel, with: stream).map { (stream, $0) }.cascade(to: spliced)
        }
        return spliced.futureResult
    }

    /// Joins an accepted `channel` to the stream `opening` yields with `join` (on the channel's
    /// event loop: it adds the handlers that carry the octets); closes it when the stream cannot
    /// be opened. What the socket delivered meanwhile (``EarlyInput``) reaches `join`'s handlers.
    static func join(
        _ channel: any Channel, toStreamOpening opening: EventLoopFuture<TetherStreamHandle>,
        with join: @escaping (any Channel, TetherStreamHandle) -> Void
    ) {
        opening.hop(to: channel.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let stream):
                join(channel, stream)
            case .failure:
                channel.close(promise: nil)
            }
            if let early = try? channel.pipeline.syncOperations.handler(type: EarlyInput.self) {
                channel.pipeline.syncOperations.removeHandler(early, promise: nil)
            }
        }
    }

    /// Runs `service` with `listeners` open; a graceful shutdown closes them first, so no new
    /// connection is accepted while the service drains.
    static func run(_ service: some Service, closingOnShutdown listeners: ListenerSet) async {
        await withGracefulShutdownHandler {
            try? await service.run()
        } onGracefulShutdown: {
            listeners.closeAll()
        }
        listeners.closeAll()
    }
}

/// Holds what an accepted socket delivers before its splice exists. A client may send its request
/// and half-close (or close) at once, and NIO reads everything up to an EOF it is notified of
/// even with `autoRead` off; without this, what arrived while the stream was being opened (or
/// waited for a connection) would fall off the end of the pipeline. Removing it hands the held
/// events on, in order, to the splice behind it.
final class EarlyInput: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private var reads: [NIOAny] = []
    private var inputClosed = false
    private var inactive = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.reads.append(data) }

    func channelReadComplete(context: ChannelHandlerContext) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        self.inputClosed = true
    }

    func channelInactive(context: ChannelHandlerContext) { self.inactive = true }

    /// Hands on what it holds: the reads (an EOF always comes after them), then the ends.
    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        let reads = self.reads
        self.reads = []
        for data in reads { context.fireChannelRead(data) }
        if !reads.isEmpty { context.fireChannelReadComplete() }
        if self.inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        if self.inactive { context.fireChannelInactive() }
        context.leavePipeline(removalToken: removalToken)
    }
}
