import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether
import TetherSession
import TetherTLS
import TetherWire

/// Accepts Tether connections as a swift-service-lifecycle `Service`, the way Hummingbird's server
/// is one: `run()` listens until graceful shutdown, which stops accepting, sends GOAWAY on every
/// connection (spec §10.2), lets open streams finish within the drain grace, closes what is left,
/// and returns. The TLS files are reloaded on a timer (and on ``reloadTLS()``, for SIGHUP): new
/// connections get new certificates, live ones keep theirs (spec §2.1).
public final class TetherListenerService: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// What every accepted connection runs with (the acceptor role).
        public var connection: TetherConnectionHandler.Configuration
        public var queueLimits = TetherTransport.QueueLimits()
        /// How often the TLS files are checked for changes; nil: only on ``reloadTLS()``.
        public var tlsReloadInterval: Duration? = .seconds(60)
        /// Open streams get this long after GOAWAY before what is left is closed (spec §10.2).
        public var drainGrace: Duration = .seconds(30)
        /// Full handshakes started per second at most; connections over it are closed before
        /// theirs (``HandshakeRateLimit``). Nil: no limit.
        public var handshakesPerSecond: Int? = nil

        public init(host: String, port: Int, connection: TetherConnectionHandler.Configuration = .init(role: .acceptor)) {
            self.host = host
            self.port = port
            self.connection = connection
        }
    }

    /// Called as connections come and go, on their event loop: a registry tracks agents with them.
    public typealias ConnectionUp = @Sendable (TetherConnection) -> Void
    /// `code` is the GOAWAY code that ended the connection, nil when it just closed.
    public typealias ConnectionDown = @Sendable (TetherConnection, _ code: ErrorCode?) -> Void

    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let tls: TLSContextStore?
    private let logger: Logger
    private let inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler?
    private let admission: TetherTransport.Admission?
    private let configurator: TetherTransport.ConnectionConfigurator?
    private let up: ConnectionUp
    private let down: ConnectionDown
    private let live = NIOLockedValueBox<[ObjectIdentifier: TetherConnection]>([:])
    private let address: Readiness<SocketAddress>

    public init(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, configuration: Configuration,
        tls: TLSContextStore?, logger: Logger = Logger(label: "tether.listener"),
        admission: TetherTransport.Admission? = nil,
        configurator: TetherTransport.ConnectionConfigurator? = nil,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil,
        onConnectionUp: @escaping ConnectionUp = { _ in }, onConnectionDown: @escaping ConnectionDown = { _, _ in }
    ) {
        self.group = group
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.admission = admission
        self.configurator = configurator
        self.inboundStreamHandler = inboundStreamHandler
        self.up = onConnectionUp
        self.down = onConnectionDown
        self.address = Readiness()
    }

    /// Where it listens, once it does (port 0 picks one).
    public var localAddress: SocketAddress {
        get async throws { try await self.address.value }
    }

    /// The connections open now.
    public var connections: [TetherConnection] { self.live.withLockedValue { Array($0.values) } }

    /// Reads the TLS files again if they changed; a file that does not load keeps the old
    /// certificates in use, and is logged.
    public func reloadTLS() {
        do {
            if try self.tls?.reloadIfChanged() == true { self.logger.notice("TLS files reloaded") }
        } catch {
            self.logger.error("TLS files not reloaded; the previous ones stay in use", metadata: ["error": "\(error)"])
        }
    }

    public func run() async throws {
        let live = self.live
        let up = self.up
        let down = self.down
        let channel: any Channel
        do {
            channel = try await TetherTransport.listen(
                group: self.group, host: self.configuration.host, port: self.configuration.port, tls: self.tls,
                configuration: self.configuration.connection, inboundStreamHandler: self.inboundStreamHandler,
                queueLimits: self.configuration.queueLimits, admission: self.admission, configurator: self.configurator,
                handshakeRate: self.configuration.handshakesPerSecond.map { HandshakeRateLimit(perSecond: $0) },
                onConnection: { connection in
                    let key = ObjectIdentifier(connection.channel)
                    live.withLockedValue { $0[key] = connection }
                    up(connection)
                    connection.closeCode.whenComplete { result in
                        live.withLockedValue { _ = $0.removeValue(forKey: key) }
                        down(connection, (try? result.get()) ?? nil)
                    }
                })
        } catch {
            self.address.resolve(.failure(error))
            throw error
        }
        self.address.resolve(.success(channel.localAddress!))
        self.logger.info("listening", metadata: ["address": "\(channel.localAddress!)"])

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { tasks in
                if let interval = self.configuration.tlsReloadInterval, self.tls != nil {
                    tasks.addTask {
                        // Cancelled when the listener closes: that ends the loop, not the service.
                        while (try? await Task.sleep(for: interval)) != nil {
                            self.reloadTLS()
                        }
                    }
                }
                try await channel.closeFuture.get()
                tasks.cancelAll()
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)  // quiesce: accept nothing more
        }
        try await self.drain()
    }

    /// GOAWAY on every connection; then waits until they closed, at most the drain grace (and a
    /// moment for the last writes), and closes what is left.
    private func drain() async throws {
        let connections = self.connections
        guard !connections.isEmpty else { return }
        self.logger.info("draining", metadata: ["connections": "\(connections.count)"])
        for connection in connections { connection.goAway() }
        let deadline = ContinuousClock.now + self.configuration.drainGrace + .seconds(2)
        while !self.connections.isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for connection in self.connections { await connection.close() }
    }
}
