import NIOCore
import TetherSession
import TetherWire

/// A Tether connection, the async face of a ``TetherConnectionHandler``: open streams, take the
/// streams the peer opens, drain and close. Works over any NIO `Channel` carrying bytes. Every
/// stream knows its connection (``TetherStreamHandle/connection``), so a server that routes
/// streams learns who opened each one.
public struct TetherConnection: Sendable {
    public let channel: any Channel

    /// The peer's verified identity (spec §2.2): set on the acceptor when TLS authenticated the
    /// dialer's certificate; nil otherwise. Nothing the peer sends in-band changes it.
    public let peerIdentity: TetherIdentity?
    /// SHA-256 of the certificate the peer presented (hex), when TLS runs below.
    public let peerCertificateSHA256: String?
    /// When the peer's certificate expires, in seconds since 1970 (UTC), when TLS runs below.
    public let peerCertificateNotAfter: Int64?
    let handler: NIOLoopBound<TetherConnectionHandler>

    init(channel: any Channel, facts: TetherConnectionHandler.TransportFacts, handler: NIOLoopBound<TetherConnectionHandler>) {
        self.channel = channel
        self.peerIdentity = facts.peerIdentity
        self.peerCertificateSHA256 = facts.peerCertificateSHA256
        self.peerCertificateNotAfter = facts.peerCertificateNotAfter
        self.handler = handler
    }

    public var eventLoop: any EventLoop { self.channel.eventLoop }

    /// The peer's address.
    public var remoteAddress: SocketAddress? { self.channel.remoteAddress }

    /// Adds the Tether handler to an active or activating channel, at the end of its pipeline.
    /// Must be called on the channel's event loop, as in a channel initializer. For plain
    /// transports (tests, benchmarks): the peer has no verified identity. ``TetherTransport`` sets
    /// up TLS first and passes on what the handshake established.
    public static func configure(
        channel: any Channel,
        configuration: TetherConnectionHandler.Configuration,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil
    ) throws -> TetherConnection {
        try self.configure(
            channel: channel, configuration: configuration, facts: .init(), inboundStreamHandler: inboundStreamHandler)
    }

    /// The same, with what the transport below established (its verified peer, record size).
    package static func configure(
        channel: any Channel,
        configuration: TetherConnectionHandler.Configuration,
        facts: TetherConnectionHandler.TransportFacts,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil
    ) throws -> TetherConnection {
        channel.eventLoop.preconditionInEventLoop()
        let handler = TetherConnectionHandler(
            configuration: configuration, facts: facts, eventLoop: channel.eventLoop,
            inboundStreamHandler: inboundStreamHandler)
        if let tap = configuration.inboundTap { try channel.pipeline.syncOperations.addHandler(InboundTap(tap)) }
        try channel.pipeline.syncOperations.addHandler(handler)
        return handler.connection!
    }

    /// Runs `body` with the handler, on the event loop.
    func withHandler<T: Sendable>(
        _ body: @escaping @Sendable (TetherConnectionHandler) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let handler = self.handler
        return self.eventLoop.flatSubmit { body(handler.value) }
    }

    /// The peer's settings, once its preface arrived (spec §3.1).
    public func ready() async throws -> Settings {
        try await self.withHandler { $0.ready }.get()
    }

    /// Opens a stream toward `service` and returns its event-loop face; callable from any
    /// thread — a relay on the connection's event loop gets the future there (spec §6.2).
    public func openStreamHandle(
        service: String,
        class streamClass: StreamClass,
        metadata: OpenMetadata = OpenMetadata(),
        compression: CompressionAlgorithm? = nil
    ) -> EventLoopFuture<TetherStreamHandle> {
        self.withHandler { $0.openStream(streamClass, service: service, metadata: metadata, compression: compression) }
    }

    /// Opens a stream toward `service` (spec §6.2). Waits for the peer's preface and for
    /// stream-count credit of the class (spec §7.3). `compression` nil picks the class default:
    /// deflate for LOGS when the peer can inflate it (spec §8.1, §9.2).
    public func openStream(
        service: String,
        class streamClass: StreamClass,
        metadata: OpenMetadata = OpenMetadata(),
        compression: CompressionAlgorithm? = nil
    ) async throws -> TetherStream {
        let handle = try await self.withHandler {
            $0.openStream(streamClass, service: service, metadata: metadata, compression: compression)
        }.get()
        return TetherStream(handle)
    }

    /// The streams the peer opens, each accepted as it is taken (spec §6.2) — those that arrived
    /// together are taken together, in one hop to the event loop. Ends when the connection closes.
    public var inboundStreams: InboundStreams { InboundStreams(connection: self) }

    /// Measures the round trip with a PING (spec §5.6): the time until its ACK arrived.
    public func ping() async throws -> TimeAmount {
        try await self.withHandler { $0.ping() }.get()
    }

    /// Refuses the connection right after its preface (spec §10.3): GOAWAY `REFUSED` with
    /// `reason` as debug text, then close. Call before any stream (an admission check).
    public func refuse(_ reason: String) {
        let handler = self.handler
        self.eventLoop.execute { handler.value.refuse(reason) }
    }

    /// Starts a graceful drain (spec §10.2); `debug` tells the peer why (no secrets: spec §5.7).
    public func goAway(code: ErrorCode = .noError, debug: String = "") {
        let handler = self.handler
        self.eventLoop.execute { handler.value.goAway(code: code, debug: debug) }
    }

    /// Closes the transport at once; streams fail with ``TetherError/Code/connectionClosed``.
    public func close() async {
        try? await self.channel.close()
    }

    /// Waits for the peer's GOAWAY (spec §10.2); throws if the connection closes without one.
    public func goAwayReceived() async throws -> GoAwayFrame {
        try await self.withHandler { $0.goAwayReceived }.get()
    }

    /// Succeeds when the connection has closed, with the GOAWAY code that ended it, if any.
    public var closeCode: EventLoopFuture<ErrorCode?> {
        self.withHandler { $0.closed }
    }

    /// Waits until the connection has closed; returns the GOAWAY code that ended it, if any.
    public func closed() async -> ErrorCode? {
        (try? await self.withHandler { $0.closed }.get()) ?? nil
    }

    /// The session's counters.
    public func counters() async throws -> SessionCounters {
        try await self.countersNow().get()
    }

    /// The session's counters, on the connection's event loop (also after it closed).
    public func countersNow() -> EventLoopFuture<SessionCounters> {
        self.withHandler { $0.eventLoop.makeSucceededFuture($0.counters) }
    }

    /// The session's counters, read on the connection's event loop without a hop: for a caller
    /// already there, such as one sweep over all of a loop's connections. Traps elsewhere.
    public var countersInEventLoop: SessionCounters { self.handler.value.counters }

    /// Live streams by class.
    public func activeStreams() async throws -> PerClass<Int> {
        try await self.withHandler { $0.eventLoop.makeSucceededFuture($0.activeStreamsByClass) }.get()
    }

    public struct InboundStreams: AsyncSequence, Sendable {
        let connection: TetherConnection

        public struct AsyncIterator: AsyncIteratorProtocol {
            let connection: TetherConnection
            var taken: [TetherStreamHandle] = []

            public mutating func next() async throws -> TetherStream? {
                if self.taken.isEmpty {
                    self.taken = try await self.connection.withHandler { $0.nextInboundStreams(upTo: 256) }.get()
                    self.taken.reverse()
                }
                return self.taken.popLast().map(TetherStream.init)
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(connection: self.connection)
        }
    }
}

extension TetherConnectionHandler {
    var eventLoop: any EventLoop { self.ready.eventLoop }
}

/// ``TetherConnectionHandler/Configuration/inboundTap``'s handler: every inbound buffer, passed on.
private final class InboundTap: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let tap: @Sendable (ByteBuffer) -> Void

    init(_ tap: @escaping @Sendable (ByteBuffer) -> Void) {
        self.tap = tap
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.tap(Self.unwrapInboundIn(data))
        context.fireChannelRead(data)
    }
}
