import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether
import TetherSession
import TetherTLS
import TetherWire

/// `tether hub`: accepts mutual-TLS edges (``TetherListenerService``; identity only from the
/// certificate), admits them (``HubAgents``: revocation list, per-identity cap; a handshake rate
/// in front of TLS), registers them (``AgentRegistry``), splices each stream an edge opens to its
/// service's backend when the edge's tenant is listed for it, and turns each connection its
/// listeners accept into a stream it opens toward one agent's exposed target.
public final class HubRelay: Service, Sendable {
    public let configuration: HubConfiguration
    public let registry: any AgentRegistry
    private let listener: TetherListenerService
    private let agents: HubAgents
    private let group: any EventLoopGroup
    private let logger: Logger
    private let bound = NIOLockedValueBox<[String: SocketAddress]>([:])

    public init(
        configuration: HubConfiguration, registry: any AgentRegistry = InMemoryAgentRegistry(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "tether.hub")
    ) throws {
        guard case .tcp(let host, let port) = configuration.listen else { throw RelayError("edges connect over TCP") }
        let tls = try TLSContextStore(
            configuration: TLSConfiguration(
                role: .server, certificateChainFile: configuration.tls.certificate, privateKeyFile: configuration.tls.key,
                trustedCAFiles: configuration.tls.trustedCAs))
        let revoked = try configuration.revoked.map { (path) throws(ConfigError) in try RevocationList.load(path: path) }
        let agents = HubAgents(connectionsPerIdentity: configuration.limits.connectionsPerIdentity, revoked: revoked ?? .init())
        var settings = Settings()
        settings.redialWindowMilliseconds = UInt32(configuration.drain.redialWindow.nanoseconds / 1_000_000)
        var connection = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        connection.session.goAwayGrace = configuration.drain.grace
        var listen = TetherListenerService.Configuration(host: host, port: port, connection: connection)
        listen.drainGrace = .nanoseconds(configuration.drain.grace.nanoseconds)
        listen.handshakesPerSecond = configuration.limits.handshakesPerSecond
        let services = Dictionary(uniqueKeysWithValues: configuration.services.map { ($0.name, $0) })
        let connectionIDs = NIOLockedValueBox<UInt64>(0)
        self.configuration = configuration
        self.registry = registry
        self.agents = agents
        self.group = group
        self.logger = logger
        self.listener = TetherListenerService(
            group: group, configuration: listen, tls: tls, logger: logger,
            admission: { peer, _ in agents.admit(peer) },
            inboundStreamHandler: { stream in
                // The same refusal for a service that does not exist and one the tenant may not
                // open: an edge learns nothing about other tenants' services.
                guard let identity = stream.connection.peerIdentity, let service = services[stream.service],
                    service.allows(identity.tenant)
                else {
                    return stream.refuse(.unknownService)
                }
                // A METADATA stream reaches its backend as NDJSON: one line per (filtered) message.
                let framing: StreamSplicer.Framing = stream.streamClass == .metadata ? .lines : .octets
                let preamble = service.proxyProtocol ? Self.proxyHeader(for: stream, from: identity).encoded() : nil
                EndpointSockets.splice(stream, to: service.backend, framing: framing, preamble: preamble, group: group)
                    .whenSuccess { outcome in
                        guard let outcome, let error = outcome.error else { return }
                        logger.notice(
                            "stream cut short", metadata: ["agent": "\(identity)", "service": "\(stream.service)", "error": "\(error)"])
                    }
            },
            onConnectionUp: { connection in
                guard let identity = connection.peerIdentity else { return }
                for older in agents.up(connection) {
                    logger.notice("replaced by a newer connection", metadata: ["agent": "\(identity)"])
                    older.goAway(code: .replaced, debug: "a newer connection with the same identity replaced this one")
                }
                Self.drainWhenTheCertificateExpires(connection, logger: logger)
                let presence = AgentPresence(
                    identity: identity, hubInstance: SessionConfiguration.processInstanceID,
                    connection: connectionIDs.withLockedValue { $0 += 1; return $0 }, address: connection.remoteAddress.map { "\($0)" },
                    connectedSince: Date(),
                    certificateNotAfter: connection.peerCertificateNotAfter.map { Date(timeIntervalSince1970: Double($0)) })
                connection.closeCode.whenComplete { _ in agents.down(connection) }
                // One task, so a short connection's record cannot be removed before it was added.
                Task {
                    try? await registry.connected(presence)
                    _ = await connection.closed()
                    try? await registry.disconnected(presence)
                }
            })
    }

    /// spec/RELAYS.md §2: who opened the stream, for the backend.
    static func proxyHeader(for stream: TetherStreamHandle, from identity: TetherIdentity) -> ProxyHeader {
        let connection = stream.connection
        let instance = String(SessionConfiguration.processInstanceID, radix: 16)
        let edge = connection.remoteAddress.flatMap { address in address.ipAddress.map { "\($0):\(address.port ?? 0)" } }
        let unique = "\(instance)/\(edge ?? "-")/\(stream.id.rawValue)"
        return ProxyHeader(
            stream: identity, service: stream.service, streamClass: stream.streamClass, uniqueID: unique,
            source: connection.remoteAddress, destination: connection.channel.localAddress)
    }

    /// spec §10.3: a connection whose certificate expires is drained with GOAWAY `REFUSED`; its
    /// edge needs a new certificate to come back.
    private static func drainWhenTheCertificateExpires(_ connection: TetherConnection, logger: Logger) {
        guard let notAfter = connection.peerCertificateNotAfter else { return }
        let left = TimeAmount.seconds(max(0, notAfter - Int64(Date().timeIntervalSince1970)))
        let drain = connection.eventLoop.scheduleTask(in: left) {
            logger.notice("certificate expired: draining", metadata: ["agent": "\(connection.peerIdentity.map { "\($0)" } ?? "-")"])
            connection.goAway(code: .refused, debug: "certificate expired")
        }
        connection.closeCode.whenComplete { _ in drain.cancel() }
    }

    /// Where edges connect, once bound.
    public var localAddress: SocketAddress {
        get async throws { try await self.listener.localAddress }
    }

    /// Where a hub listener listens, once bound.
    public func boundAddress(ofListener name: String) -> SocketAddress? { self.bound.withLockedValue { $0[name] } }

    /// The agents connected now.
    public var connectedAgents: [TetherIdentity] { self.agents.connected }

    /// Reads the TLS files and the revocation list again (SIGHUP). Live connections of identities
    /// the list now names are drained with GOAWAY `REFUSED` (spec §10.3); a list that does not load
    /// leaves the one in force, and is logged.
    public func reload() {
        self.listener.reloadTLS()
        guard let path = self.configuration.revoked else { return }
        do {
            let list = try RevocationList.load(path: path)
            let drained = self.agents.revoke(list)
            self.logger.notice(
                "revocation list reloaded", metadata: ["revoked": "\(list.identities.count)", "draining": "\(drained.count)"])
            for connection in drained { connection.goAway(code: .refused, debug: "identity revoked") }
        } catch {
            self.logger.error("revocation list not reloaded; the previous one stays in force", metadata: ["error": "\(error)"])
        }
    }

    public func run() async throws {
        var listeners: [any Channel] = []
        for configured in self.configuration.listeners {
            let agents = self.agents
            let logger = self.logger
            // spec §5.2.1: who asked, for the edge's audit.
            let metadata = OpenMetadata([.init(key: OpenMetadata.userKey, value: ByteBuffer(string: "listener:\(configured.name)"))])
            let listener = try await EndpointSockets.listen(configured.listen, group: self.group) { channel in
                guard let connection = agents.connection(to: configured.agent) else {
                    logger.notice("agent not connected: closing", metadata: ["listener": "\(configured.name)"])
                    channel.close(promise: nil)
                    return
                }
                EndpointSockets.splice(
                    channel,
                    toStreamOpening: connection.openStreamHandle(service: configured.target, class: .bulk, metadata: metadata))
            }
            if let address = listener.localAddress { self.bound.withLockedValue { $0[configured.name] = address } }
            self.logger.info("listening for \(configured.agent)", metadata: ["listener": "\(configured.name)"])
            listeners.append(listener)
        }
        await EndpointSockets.run(self.listener, closingOnShutdown: listeners)
    }
}

