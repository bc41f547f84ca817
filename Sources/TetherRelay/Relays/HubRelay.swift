import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether
import TetherTLS
import TetherWire

/// `tether hub`: accepts mutual-TLS edges (``TetherListenerService``; identity only from the
/// certificate), splices each stream an edge opens to its service's backend when the edge's
/// tenant is listed for it, and turns each connection its listeners accept into a stream it
/// opens toward one agent's exposed target.
public final class HubRelay: Service, Sendable {
    public let configuration: HubConfiguration
    private let listener: TetherListenerService
    private let group: any EventLoopGroup
    private let logger: Logger
    /// The live connection of each agent (the newest, when an identity connects twice).
    private let agents = NIOLockedValueBox<[TetherIdentity: TetherConnection]>([:])
    private let bound = NIOLockedValueBox<[String: SocketAddress]>([:])

    public init(
        configuration: HubConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tether.hub")
    ) throws {
        guard case .tcp(let host, let port) = configuration.listen else { throw RelayError("edges connect over TCP") }
        let tls = try TLSContextStore(
            configuration: TLSConfiguration(
                role: .server, certificateChainFile: configuration.tls.certificate, privateKeyFile: configuration.tls.key,
                trustedCAFiles: configuration.tls.trustedCAs))
        let services = Dictionary(uniqueKeysWithValues: configuration.services.map { ($0.name, $0) })
        let agents = self.agents
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.listener = TetherListenerService(
            group: group, configuration: .init(host: host, port: port), tls: tls, logger: logger,
            inboundStreamHandler: { stream in
                // The same refusal for a service that does not exist and one the tenant may not
                // open: an edge learns nothing about other tenants' services.
                guard let identity = stream.connection.peerIdentity, let service = services[stream.service],
                    service.allows(identity.tenant)
                else {
                    return stream.refuse(.unknownService)
                }
                _ = EndpointSockets.splice(stream, to: service.backend, group: group)
            },
            onConnectionUp: { connection in
                guard let identity = connection.peerIdentity else { return }
                agents.withLockedValue { $0[identity] = connection }
            },
            onConnectionDown: { connection, _ in
                guard let identity = connection.peerIdentity else { return }
                agents.withLockedValue { agents in
                    if agents[identity]?.channel === connection.channel { agents.removeValue(forKey: identity) }
                }
            })
    }

    /// Where edges connect, once bound.
    public var localAddress: SocketAddress {
        get async throws { try await self.listener.localAddress }
    }

    /// Where a hub listener listens, once bound.
    public func boundAddress(ofListener name: String) -> SocketAddress? { self.bound.withLockedValue { $0[name] } }

    /// The agents connected now.
    public var connectedAgents: [TetherIdentity] { self.agents.withLockedValue { Array($0.keys) } }

    public func run() async throws {
        var listeners: [any Channel] = []
        for configured in self.configuration.listeners {
            let agents = self.agents
            let logger = self.logger
            let listener = try await EndpointSockets.listen(configured.listen, group: self.group) { channel in
                guard let connection = agents.withLockedValue({ $0[configured.agent] }) else {
                    logger.notice("agent not connected: closing", metadata: ["listener": "\(configured.name)"])
                    channel.close(promise: nil)
                    return
                }
                EndpointSockets.splice(channel, toStreamOpening: connection.openStreamHandle(service: configured.target, class: .bulk))
            }
            if let address = listener.localAddress { self.bound.withLockedValue { $0[configured.name] = address } }
            self.logger.info("listening for \(configured.agent)", metadata: ["listener": "\(configured.name)"])
            listeners.append(listener)
        }
        await EndpointSockets.run(self.listener, closingOnShutdown: listeners)
    }
}
