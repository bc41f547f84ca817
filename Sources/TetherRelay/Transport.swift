import Metrics
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import Tether
import TetherTLS
import TetherWire

/// Listening and dialing with Tether over TCP — over mutual TLS in production (spec §2), plain
/// only for tests and benchmarks. TLS comes first; the Tether handler is added once the
/// handshake has authenticated the peer, with the verified identity, so nothing Tether does
/// (compression included) happens before authentication.
public enum TetherTransport {
    /// Socket options for shallow queues (spec §8.2): explicit NIO write-buffer watermarks, and
    /// `TCP_NOTSENT_LOWAT` following the delivery rate, so little waits in user space or the
    /// kernel ahead of a new command.
    public struct QueueLimits: Sendable {
        /// The channel stops taking frames above `high` pending octets and resumes below `low`.
        public var writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 16 << 10, high: 32 << 10)
        /// Unsent octets the kernel may hold (`TCP_NOTSENT_LOWAT`): by default about 250 µs of
        /// sending, between 16 and 128 KiB, and the watermarks above are lowered to it where it
        /// is lower; ``NotSentLimit/fixed(_:)`` pins it; nil leaves the system default (no limit
        /// on Linux).
        public var notSentLowWaterMark: NotSentLimit? = NotSentLimit()
        /// Socket reads per wakeup before the frames read are acted on and answers flushed.
        public var readsPerWakeup: UInt = 4
        /// Between writing passes, read first what waits unread in the socket (spec §8.2 rule 5;
        /// Linux TCP sockets). Off, passes follow each other until credit or data runs out.
        public var readFirst = true

        public init() {}
    }

    /// Called for each connection that completed its handshake, on its event loop.
    public typealias ConnectionHandler = @Sendable (TetherConnection) -> Void

    /// Decides, between the TLS handshake and the Tether session, whether a connection may go on
    /// (DESIGN: a revoked identity, a connection cap, a handshake rate). Called on the
    /// connection's event loop with what TLS verified; a refused connection gets its preface and
    /// GOAWAY `REFUSED` with the reason (spec §10.3), then closes — it never opens a stream.
    public typealias Admission = @Sendable (TLSPeer, _ remoteAddress: SocketAddress?) -> AdmissionDecision

    public enum AdmissionDecision: Sendable, Hashable {
        case admit
        /// The reason goes to the peer in GOAWAY's debug text: no secrets.
        case refuse(String)
    }
    /// Adjusts an admitted connection's configuration to what TLS verified, before its session
    /// starts (on the connection's event loop): a hub gives each identity's connections their
    /// identity's window pool.
    public typealias ConnectionConfigurator = @Sendable (TLSPeer, inout TetherConnectionHandler.Configuration) -> Void

    /// Called for each connection whose TLS handshake failed.
    public typealias HandshakeFailureHandler = @Sendable (any Error) -> Void

    /// Sets up an accepted or dialed channel: TLS (if `tls` is given), then Tether. The future
    /// succeeds with the connection once it is authenticated. Call on the channel's event loop.
    public static func configure(
        channel: any Channel,
        tls: TLSContext?,
        configuration: TetherConnectionHandler.Configuration,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil,
        readFirst: Bool = true,
        admission: Admission? = nil,
        configurator: ConnectionConfigurator? = nil,
        serverName: String? = nil
    ) -> EventLoopFuture<TetherConnection> {
        channel.eventLoop.preconditionInEventLoop()
        var facts = TetherConnectionHandler.TransportFacts()
        if readFirst, let probe = try? UnreadInputProbe.add(to: channel) { facts.unreadInput = probe }
        guard let tls else {
            return channel.eventLoop.makeCompletedFuture {
                try TetherConnection.configure(
                    channel: channel, configuration: configuration, facts: facts,
                    inboundStreamHandler: inboundStreamHandler)
            }
        }
        let handler: TLSHandler
        do {
            handler = try TLSHandler(context: tls, serverName: serverName, eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        // Runs inside the handshake's completion, before any plaintext goes up (TLSHandler).
        return handler.handshakeCompleted.assumeIsolated().flatMapThrowing { peer in
            var facts = facts
            facts.recordSize = TLSHandler.recordSize
            facts.peerIdentity = peer.identity
            facts.peerCertificateSHA256 = peer.certificateSHA256
            facts.peerCertificateNotAfter = peer.certificateNotAfter
            let decision = admission?(peer, channel.remoteAddress) ?? .admit
            var configuration = configuration
            if case .admit = decision { configurator?(peer, &configuration) }
            let connection = try TetherConnection.configure(
                channel: channel, configuration: configuration, facts: facts, inboundStreamHandler: inboundStreamHandler)
            if case .refuse(let reason) = decision {
                connection.refuse(reason)
                throw AdmissionRefused(reason: reason)
            }
            return connection
        }.nonisolated()
    }

    /// Deflates large units on NIO's shared thread pool, off every event loop: set it as
    /// `configuration.compression.offload` to opt in (see its cost there).
    public static let deflateOnThreadPool: BlockingWorkRunner = { work in
        NIOThreadPool.singleton.submit { _ in work() }
    }

    /// Listens on `host:port`; every accepted connection runs TLS (a fresh context from `tls` per
    /// connection, so reloaded certificates apply to new connections) and Tether as the acceptor.
    public static func listen(
        group: any EventLoopGroup,
        host: String,
        port: Int,
        tls: TLSContextStore?,
        configuration: TetherConnectionHandler.Configuration,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil,
        queueLimits: QueueLimits = QueueLimits(),
        admission: Admission? = nil,
        configurator: ConnectionConfigurator? = nil,
        handshakeRate: HandshakeRateLimit? = nil,
        onConnection: @escaping ConnectionHandler = { _ in },
        onHandshakeFailure: @escaping HandshakeFailureHandler = { _ in }
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: queueLimits.writeBufferWaterMark)
            .childChannelOption(.maxMessagesPerRead, value: queueLimits.readsPerWakeup)
            .childChannelInitializer { channel in
                if let handshakeRate, !handshakeRate.take() {
                    // Over the rate: closed before the handshake costs anything.
                    Counter(
                        label: "tether_connections_refused_total", dimensions: [("reason", "handshake rate")],
                        factory: configuration.metricsFactory ?? MetricsSystem.factory
                    ).increment()
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try self.applyNotSentLowWaterMark(queueLimits, to: channel)
                    self.configure(
                        channel: channel, tls: tls?.current, configuration: configuration,
                        inboundStreamHandler: inboundStreamHandler, readFirst: queueLimits.readFirst,
                        admission: admission, configurator: configurator
                    ).whenComplete { result in
                        switch result {
                        case .success(let connection): onConnection(connection)
                        case .failure(let refused as AdmissionRefused):
                            Counter(
                                label: "tether_connections_refused_total", dimensions: [("reason", refused.reason)],
                                factory: configuration.metricsFactory ?? MetricsSystem.factory
                            ).increment()
                            onHandshakeFailure(refused)
                        case .failure(let error):
                            let reason = (error as? TLSError)?.code.description ?? "other"
                            Counter(
                                label: "tether_tls_handshake_failures_total", dimensions: [("reason", reason)],
                                factory: configuration.metricsFactory ?? MetricsSystem.factory
                            ).increment()
                            onHandshakeFailure(error)
                        }
                    }
                }
            }
            .bind(host: host, port: port).get()
    }

    private static func applyNotSentLowWaterMark(_ limits: QueueLimits, to channel: any Channel) throws {
        guard let limit = limits.notSentLowWaterMark else { return }
        try NotSentTuner.install(limit, writeBufferWaterMark: limits.writeBufferWaterMark, on: channel)
    }

    /// Dials `address` and runs TLS (if given) and Tether as the dialer; returns once the peer's
    /// preface has arrived. `userTimeout` sets `TCP_USER_TIMEOUT` (milliseconds of unacknowledged
    /// data before the kernel gives up on the connection); `serverName` replaces the TLS
    /// configuration's name to verify the acceptor against. With `tunnel`, `address` is an HTTP
    /// proxy's, asked to CONNECT to the acceptor first (swift-nio-extras' proxy-connect handler).
    /// `source` is the local address to leave from (port 0: any).
    public static func dial(
        group: any EventLoopGroup,
        to address: SocketAddress,
        tls: TLSContext?,
        configuration: TetherConnectionHandler.Configuration,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil,
        queueLimits: QueueLimits = QueueLimits(),
        userTimeout: TimeAmount? = nil,
        serverName: String? = nil,
        through tunnel: HTTPConnectTunnel? = nil,
        from source: SocketAddress? = nil
    ) async throws -> TetherConnection {
        // The handlers go in before the connection is up, so not an octet is read without them.
        let configured = group.any().makePromise(of: TetherConnection.self)
        let channel: any Channel
        do {
            var bootstrap = ClientBootstrap(group: group)
            if let source { bootstrap = bootstrap.bind(to: source) }
            channel = try await bootstrap
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.writeBufferWaterMark, value: queueLimits.writeBufferWaterMark)
                .channelOption(.maxMessagesPerRead, value: queueLimits.readsPerWakeup)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.applyNotSentLowWaterMark(queueLimits, to: channel)
                        if let userTimeout {
                            let option = ChannelOptions.Types.SocketOption(
                                level: NIOBSDSocket.OptionLevel.tcp, name: NIOBSDSocket.Option(rawValue: TCP_USER_TIMEOUT))
                            try channel.syncOptions?.setOption(option, value: SocketOptionValue(userTimeout.nanoseconds / 1_000_000))
                        }
                        let opened = tunnel.map { $0.open(on: channel) } ?? channel.eventLoop.makeSucceededVoidFuture()
                        opened.flatMap {
                            self.configure(
                                channel: channel, tls: tls, configuration: configuration,
                                inboundStreamHandler: inboundStreamHandler, readFirst: queueLimits.readFirst,
                                serverName: serverName)
                        }.cascade(to: configured)
                    }
                }
                .connect(to: address).get()
        } catch {
            configured.fail(error)
            throw error
        }
        do {
            let connection = try await configured.futureResult.get()
            _ = try await connection.ready()
            return connection
        } catch {
            try? await channel.close()
            throw error
        }
    }
}

/// A connection the admission check refused (``TetherTransport/Admission``).
public struct AdmissionRefused: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { "connection refused: \(self.reason)" }
}

/// A CONNECT through an HTTP proxy before TLS (RFC 9110 §9.3.6): the proxy opens a TCP connection
/// to `host:port` and relays octets after its 2xx answer.
public struct HTTPConnectTunnel: Sendable {
    public var host: String
    public var port: Int
    /// The request's headers (`Proxy-Authorization`); never logged.
    public var headers: HTTPHeaders
    /// How long the proxy may take to answer.
    public var timeout: TimeAmount = .seconds(10)

    public init(host: String, port: Int, headers: HTTPHeaders) {
        self.host = host
        self.port = port
        self.headers = headers
    }

    /// Adds the HTTP codec and the proxy-connect handler to `channel` (on its event loop, before
    /// it is active); the future succeeds once the tunnel is open and the HTTP handlers are gone,
    /// and fails with an ``EgressProxyError`` that says what the proxy answered.
    func open(on channel: any Channel) -> EventLoopFuture<Void> {
        let established = channel.eventLoop.makePromise(of: Void.self)
        let encoder = HTTPRequestEncoder()
        // Nothing follows a CONNECT's 2xx before our ClientHello: the hub does not speak first.
        let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes))
        let connect = NIOHTTP1ProxyConnectHandler(
            targetHost: self.host, targetPort: self.port, headers: self.headers, deadline: .now() + self.timeout,
            promise: established)
        do {
            try channel.pipeline.syncOperations.addHandlers(encoder, decoder, connect)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let target = "\(self.host):\(self.port)"
        return established.futureResult.flatMapErrorThrowing { error in
            throw Self.explain(error, target: target)
        }.assumeIsolated().flatMap {
            channel.pipeline.syncOperations.removeHandler(decoder).assumeIsolated().flatMap {
                channel.pipeline.syncOperations.removeHandler(encoder)
            }.nonisolated()
        }.nonisolated()
    }

    static func explain(_ error: any Error, target: String) -> EgressProxyError {
        guard let error = error as? NIOHTTP1ProxyConnectHandler.Error else {
            return EgressProxyError("the proxy did not open a tunnel to \(target): \(error)", reason: "proxy-refused")
        }
        if error == .proxyAuthenticationRequired() {
            return EgressProxyError(
                "the proxy wants credentials it accepts (407 Proxy Authentication Required) for CONNECT \(target)", reason: "proxy-auth")
        }
        if error == .httpProxyHandshakeTimeout() {
            return EgressProxyError("the proxy did not answer CONNECT \(target) in time", reason: "proxy-timeout")
        }
        // The handler's description names the response head; the status is what the operator needs.
        let text = "\(error)"
        if let start = text.range(of: "status: "), let end = text[start.upperBound...].firstIndex(of: ",") {
            return EgressProxyError("the proxy refused CONNECT \(target): \(text[start.upperBound..<end])", reason: "proxy-refused")
        }
        return EgressProxyError("the proxy did not open a tunnel to \(target): \(text)", reason: "proxy-refused")
    }
}
