import Foundation
import Logging
import Metrics
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
    public let registry: any AgentRegistry
    private let live: NIOLockedValueBox<HubConfiguration>
    private let listener: TetherListenerService
    let hubAgents: HubAgents
    /// What the hub announces in its SETTINGS (spec §3.3).
    let settings: Settings
    let traffic = TrafficMetrics()
    /// Each agent's latest METADATA document.
    public let latestMetadata: LatestMetadataStore
    private let spliced: SplicedStreams
    private let group: any EventLoopGroup
    private let logger: Logger
    private let listeners = ListenerSet()
    private let started = Readiness<Void>()
    private let tls: TLSContextStore
    private let audit: StreamAudit
    /// nil until edges can connect; then whether the hub drains (`/readyz`).
    private let draining = NIOLockedValueBox<Bool?>(nil)

    /// The configuration in force: the one it started with, as the last reload changed it.
    public var configuration: HubConfiguration { self.live.withLockedValue { $0 } }

    /// The hub PINGs an edge only after 30 s without a frame (spec §10.1's longest interval):
    /// edges PING every 15 s (`dial.keepalive`), so an idle connection's exchange is the edge's
    /// and the hub only answers. With equal intervals the hub's timer, which starts first, fired
    /// and sent the PING — at 10,000 idle edges most of what the hub did (README "Fleet scale").
    static let keepaliveIntervalMilliseconds: UInt32 = 30_000

    /// `inboundTap` sees what every edge sends, decrypted (``TetherConnectionHandler/Configuration/inboundTap``):
    /// for tests and debugging.
    public init(
        configuration: HubConfiguration, registry: any AgentRegistry = InMemoryAgentRegistry(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "tether.hub"),
        inboundTap: (@Sendable (ByteBuffer) -> Void)? = nil
    ) throws {
        guard case .tcp(let host, let port) = configuration.listen else { throw RelayError("edges connect over TCP") }
        let tls = try TLSContextStore(
            configuration: TLSConfiguration(
                role: .server, certificateChainFile: configuration.tls.certificate, privateKeyFile: configuration.tls.key,
                trustedCAFiles: configuration.tls.trustedCAs))
        let revoked = try configuration.revoked.map { (path) throws(ConfigError) in try RevocationList.load(path: path) }
        let agents = HubAgents(
            connectionsPerIdentity: configuration.limits.connectionsPerIdentity,
            windowMemoryPerIdentity: configuration.limits.windowMemoryPerIdentity, revoked: revoked ?? .init())
        var settings = Settings()
        settings.implementationVersion = TetherRelease.packed
        settings.redialWindowMilliseconds = UInt32(configuration.drain.redialWindow.nanoseconds / 1_000_000)
        settings.keepaliveIntervalMilliseconds = Self.keepaliveIntervalMilliseconds
        var connection = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        connection.session.goAwayGrace = configuration.drain.grace
        connection.inboundTap = inboundTap
        var listen = TetherListenerService.Configuration(host: host, port: port, connection: connection)
        listen.drainGrace = .nanoseconds(configuration.drain.grace.nanoseconds)
        listen.handshakesPerSecond = configuration.limits.handshakesPerSecond
        let live = NIOLockedValueBox(configuration)
        let spliced = SplicedStreams()
        let connectionIDs = NIOLockedValueBox<UInt64>(0)
        // Every line names the hub instance; lines about a connection or stream name its agent.
        let logger = {
            var logger = logger
            logger[metadataKey: "hub"] = "\(String(SessionConfiguration.processInstanceID, radix: 16))"
            return logger
        }()
        let audit = StreamAudit(identity: nil)
        let latestMetadata = LatestMetadataStore(limits: configuration.latestMetadata)
        self.latestMetadata = latestMetadata
        self.audit = audit
        self.live = live
        self.tls = tls
        self.spliced = spliced
        self.registry = registry
        self.hubAgents = agents
        self.settings = settings
        self.group = group
        self.logger = logger
        self.listener = TetherListenerService(
            group: group, configuration: listen, tls: tls, logger: logger,
            admission: { peer, _ in agents.admit(peer) },
            configurator: { peer, configuration in agents.configure(peer, &configuration) },
            inboundStreamHandler: { stream in
                // The same refusal for a service that does not exist and one the tenant may not
                // open: an edge learns nothing about other tenants' services.
                let service = live.withLockedValue { $0.services.first { $0.name == stream.service } }
                let opened = StreamAudit.Opened(
                    agent: stream.connection.peerIdentity.map { "\($0)" } ?? "-", openedBy: "agent", service: stream.service,
                    streamClass: stream.streamClass)
                guard let identity = stream.connection.peerIdentity, let service, service.allows(identity.tenant) else {
                    audit.ended(opened, stream: stream.id, failure: "refused: unknown service")
                    return stream.refuse(.unknownService)
                }
                // A METADATA stream reaches its backend as NDJSON: one line per (filtered) message.
                let framing: StreamSplicer.Framing = stream.streamClass == .metadata ? .lines : .octets
                let preamble = service.proxyProtocol ? Self.proxyHeader(for: stream, from: identity).encoded() : nil
                // The hub keeps each agent's latest document (README "Metadata").
                let observer =
                    stream.streamClass == .metadata
                    ? LatestMetadataStore.Recorder(store: latestMetadata, identity: identity, service: service.name).read : nil
                let splicing = EndpointSockets.splice(
                    stream, to: service.backend, framing: framing, preamble: preamble, observer: observer)
                spliced.insert(stream, service: service.name, tenant: identity.tenant, until: splicing)
                splicing.whenSuccess { outcome in
                    audit.ended(opened, stream: stream.id, outcome: outcome, failure: outcome == nil ? "backend unreachable" : nil)
                    guard let outcome, let error = outcome.error else { return }
                    logger.notice(
                        "stream cut short",
                        metadata: [
                            "agent": "\(identity)", "stream": "\(stream.id.rawValue)", "service": "\(stream.service)", "error": "\(error)",
                        ])
                }
            },
            onConnectionUp: { [traffic] connection in
                traffic.track(connection)
                guard let identity = connection.peerIdentity else { return }
                for older in agents.up(connection) {
                    logger.notice("replaced by a newer connection", metadata: ["agent": "\(identity)"])
                    older.goAway(code: .replaced, debug: "a newer connection with the same identity replaced this one")
                }
                Self.drainWhenTheCertificateExpires(connection, logger: logger)
                let presence = AgentPresence(
                    identity: identity, hubInstance: SessionConfiguration.processInstanceID,
                    connection: connectionIDs.withLockedValue { $0 += 1; return $0 }, address: connection.remoteAddress.map(Self.hostAndPort),
                    connectedSince: Date(),
                    certificateNotAfter: connection.peerCertificateNotAfter.map { Date(timeIntervalSince1970: Double($0)) })
                // No task waits out the connection (a suspended task per idle edge): the record is
                // removed after it was added, by a task that starts when the connection closed.
                let registered = Task { try? await registry.connected(presence) }
                connection.closeCode.whenComplete { result in
                    agents.down(connection)
                    switch result {
                    case .success(nil), .failure: agents.noteError("connection lost without GOAWAY", of: identity)
                    case .success(.noError?), .success(.replaced?): break
                    case .success(let code?): agents.noteError("connection closed: \(code.name)", of: identity)
                    }
                    Task {
                        await registered.value
                        try? await registry.disconnected(presence)
                    }
                }
            })
    }

    /// `192.0.2.7:40112` or `[2001:db8::7]:40112`, as people write addresses; a Unix socket's path.
    static func hostAndPort(_ address: SocketAddress) -> String {
        switch address {
        case .v4(let v4): "\(address.ipAddress ?? v4.host):\(address.port ?? 0)"
        case .v6: "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        case .unixDomainSocket: address.pathname ?? "unix"
        }
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

    /// Returns once the hub accepts edges and every listener is bound (systemd's `READY=1`).
    public var listening: Void {
        get async throws {
            try await self.started.value
            _ = try await self.localAddress
        }
    }

    /// Where a hub listener listens, once bound.
    public func boundAddress(ofListener name: String) -> SocketAddress? { self.listeners.localAddress(of: name) }

    /// The agents connected now.
    public var connectedAgents: [TetherIdentity] { self.hubAgents.connected }

    /// Why ``openStream(to:target:user:within:)`` could not give a stream.
    public enum OpenFailure: Error, Equatable, Sendable, CustomStringConvertible {
        /// No connection to the agent is up.
        case agentNotConnected
        /// The edge refused the stream: `POLICY_DENIED` (its customer's policy), `UNKNOWN_SERVICE`
        /// (no such expose), `CONNECT_ERROR` (the target is down), or another code.
        case refused(ErrorCode)
        /// The edge did not acknowledge it in time.
        case timedOut
        /// The connection or the stream ended before the edge answered.
        case ended(String)

        /// How an HTTP front end answers it (README "Front door", "Logs"): the status code, and what
        /// went wrong in words about the `thing` asked for (`target`, `log source`).
        func httpAnswer(about thing: String) -> (code: Int, message: String) {
            switch self {
            case .agentNotConnected: (404, "no such agent, or it is not connected")
            case .refused(.unknownService): (404, "the agent has no such \(thing)")
            case .refused(.policyDenied): (403, "the node's policy does not allow this \(thing)")
            case .refused(.connectError): (502, "the agent could not reach its \(thing)")
            case .refused(let code): (502, "the agent refused the stream: \(code.name)")
            case .timedOut: (504, "the agent did not reach its \(thing) in time")
            case .ended: (502, "the connection to the agent ended")
            }
        }

        public var description: String {
            switch self {
            case .agentNotConnected: "agent not connected"
            case .refused(let code): "refused: \(code.name)"
            case .timedOut: "no OPENED in time"
            case .ended(let why): "ended: \(why)"
            }
        }
    }

    /// Opens a stream toward `agent`'s exposed `target` on behalf of `user` (the edge audits
    /// it: spec §5.2.1), and succeeds once the edge has accepted it and connected the target —
    /// its OPENED (spec §5.8). An edge that does not announce `OPEN_ACK` cannot say so: its stream
    /// is given at once. Past `deadline` without an answer the stream is reset with CANCEL.
    /// A stream of another class, with more OPEN metadata (a LOGS stream's cursor: spec/LOGS.md §2),
    /// is opened the same way.
    public func openStream(
        to agent: TetherIdentity, target: String, user: String, class streamClass: StreamClass = .bulk,
        metadata extra: [(key: String, value: String)] = [], within deadline: TimeAmount
    ) async throws(OpenFailure) -> TetherStreamHandle {
        guard let connection = self.hubAgents.connection(to: agent) else { throw .agentNotConnected }
        let metadata = OpenMetadata(
            [.init(key: OpenMetadata.userKey, value: ByteBuffer(string: user))]
                + extra.map { .init(key: $0.key, value: ByteBuffer(string: $0.value)) })
        let stream: TetherStreamHandle
        let peer: Settings
        do {
            peer = try await connection.ready()
            stream = try await connection.openStreamHandle(service: target, class: streamClass, metadata: metadata).get()
        } catch {
            throw .ended("\(error)")
        }
        guard peer.openAcknowledgements else { return stream }
        let expired = NIOLockedValueBox(false)
        let answer = stream.eventLoop.flatSubmit {
            let timeout = stream.eventLoop.scheduleTask(in: deadline) {
                expired.withLockedValue { $0 = true }
                stream.reset(.cancel)
            }
            let acknowledged = stream.acknowledged()
            acknowledged.whenComplete { _ in timeout.cancel() }
            return acknowledged
        }
        do {
            try await answer.get()
            return stream
        } catch {
            let failure: OpenFailure =
                if expired.withLockedValue({ $0 }) {
                    .timedOut
                } else if let error = error as? TetherError, error.code == .streamReset, let code = error.errorCode {
                    .refused(code)
                } else {
                    .ended("\(error)")
                }
            self.hubAgents.noteError("stream to \(target) for \(user): \(failure)", of: agent)
            throw failure
        }
    }

    /// Puts `new` in force under the running hub (SIGHUP; README "Reloading"): its services —
    /// backends, tenant lists, PROXY v2 —, listeners and revocation list, and the TLS files as
    /// they are now. A revocation list that does not load or a listener that cannot be bound
    /// throws, and nothing changes. A spliced stream whose tenant the new configuration no longer
    /// lists for its service (or whose service is gone) is reset with `UNKNOWN_SERVICE`, as it
    /// would be refused now; live connections of identities the list now names are drained with
    /// GOAWAY `REFUSED` (spec §10.3). The keys read only at start (listen, tls, limits, drain)
    /// are logged when they changed.
    public func reload(_ new: HubConfiguration) async throws(RelayError) {
        do {
            try await self.reloading(new)
        } catch let error as RelayError {
            self.logger.error("configuration not reloaded; the running one stays in force", metadata: ["error": "\(error)"])
            throw error
        } catch {
            self.logger.error("configuration not reloaded; the running one stays in force", metadata: ["error": "\(error)"])
            throw RelayError("\(error)")
        }
    }

    private func reloading(_ new: HubConfiguration) async throws {
        try await self.started.value
        let revoked: RevocationList
        do {
            revoked = try new.revoked.map { (path) throws(ConfigError) in try RevocationList.load(path: path) } ?? .init()
        } catch {
            throw RelayError("revoked: \(error.description)")
        }
        let changes = try await self.listeners.apply(Self.listeners(of: new)) { try await self.bind($0, in: new) }
        let old = self.live.withLockedValue { live in
            defer { live = new }
            return live
        }
        let reset = self.spliced.resetAll { service, tenant in
            new.services.first { $0.name == service }?.allows(tenant) != true
        }
        self.latestMetadata.reconfigure(new.latestMetadata)
        let drained = self.hubAgents.revoke(revoked)
        for connection in drained { connection.goAway(code: .refused, debug: "identity revoked") }
        self.listener.reloadTLS()
        var restart: [String] = []
        if old.listen != new.listen { restart.append("listen") }
        if old.tls != new.tls { restart.append("tls") }
        if old.limits != new.limits { restart.append("limits") }
        if old.drain != new.drain { restart.append("drain") }
        if !restart.isEmpty {
            self.logger.warning("changed, in force after a restart: \(restart.joined(separator: ", "))")
        }
        self.logger.notice(
            "configuration reloaded",
            metadata: [
                "bound": "\(changes.bound.joined(separator: ","))", "closed": "\(changes.closed.joined(separator: ","))",
                "reset": "\(reset)", "revoked": "\(revoked.identities.count)", "draining": "\(drained.count)",
            ])
    }

    public func run() async throws {
        do {
            let configuration = self.configuration
            try await self.listeners.apply(Self.listeners(of: configuration)) { try await self.bind($0, in: configuration) }
            self.started.resolve(.success(()))
        } catch {
            self.started.resolve(.failure(error))
            self.listeners.closeAll()
            throw error
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { tasks in
                tasks.addTask {
                    guard (try? await self.localAddress) != nil else { return }
                    self.draining.withLockedValue { $0 = $0 ?? false }
                }
                await EndpointSockets.run(self.listener, closingOnShutdown: self.listeners)
            }
        } onGracefulShutdown: {
            self.draining.withLockedValue { $0 = true }
        }
    }

    /// The hub's listeners by name, the front door's among them (a listener may not be named so).
    private static func listeners(of configuration: HubConfiguration) -> [String: Endpoint] {
        var listeners = Dictionary(uniqueKeysWithValues: configuration.listeners.map { ($0.name, $0.listen) })
        if let frontDoor = configuration.frontDoor { listeners[Self.frontDoorName] = frontDoor.listen }
        return listeners
    }

    static let frontDoorName = "front door"

    /// A hub listener: each accepted connection becomes a stream the hub opens toward the agent
    /// and target the configuration in force names for it when the connection arrives.
    private func bind(_ name: String, in configuration: HubConfiguration) async throws -> any Channel {
        if name == Self.frontDoorName, let frontDoor = configuration.frontDoor {
            let live = self.live
            let channel = try await FrontDoor.bind(
                frontDoor, current: { live.withLockedValue { $0.frontDoor } }, hub: self, group: self.group,
                access: Logger(label: "tether.access"))
            self.logger.info("front door listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "-")"])
            return channel
        }
        guard let bound = configuration.listeners.first(where: { $0.name == name }) else { throw RelayError("no listener \(name)") }
        let agents = self.hubAgents
        let logger = self.logger
        let live = self.live
        let audit = self.audit
        let listener = try await EndpointSockets.listen(bound.listen, group: self.group) { channel in
            let configured = live.withLockedValue { $0.listeners.first { $0.name == name } } ?? bound
            let opened = StreamAudit.Opened(
                agent: "\(configured.agent)", openedBy: "listener:\(name)", service: configured.target, streamClass: .bulk)
            guard let connection = agents.connection(to: configured.agent) else {
                logger.notice("agent not connected: closing", metadata: ["listener": "\(name)", "agent": "\(configured.agent)"])
                audit.ended(opened, stream: nil, failure: "not opened: agent not connected")
                channel.close(promise: nil)
                return
            }
            // spec §5.2.1: who asked, for the edge's audit.
            let metadata = OpenMetadata([.init(key: OpenMetadata.userKey, value: ByteBuffer(string: "listener:\(name)"))])
            let opening = connection.openStreamHandle(service: configured.target, class: .bulk, metadata: metadata)
            EndpointSockets.splice(channel, toStreamOpening: opening).whenComplete { result in
                switch result {
                case .success(let (stream, outcome)): audit.ended(opened, stream: stream.id, outcome: outcome)
                case .failure(let error): audit.ended(opened, stream: nil, failure: "not opened: \(error)")
                }
            }
        }
        self.logger.info("listening for \(bound.agent)", metadata: ["listener": "\(name)"])
        return listener
    }
}

extension HubRelay: AdminSource {
    /// Ready while it accepts edges: bound, and not draining.
    public var notReady: String? {
        switch self.draining.withLockedValue({ $0 }) {
        case nil: "starting"
        case true?: "draining"
        case false?: nil
        }
    }

    public func refreshGauges() {
        Gauge(label: "tether_connected_edges").record(self.listener.connections.count)
        RelayGauges.recordCertificateExpiry(self.tls)
    }

    /// `/v1/state`: where it listens, whether it accepts, how many edges are connected.
    public func state() async -> any Encodable & Sendable {
        let configuration = self.configuration
        return HubState(
            listen: (try? await self.localAddress).map { "\($0)" } ?? "-", ready: self.notReady == nil,
            notReady: self.notReady, connectedEdges: self.listener.connections.count,
            connectedAgents: self.hubAgents.connected.count, instance: String(SessionConfiguration.processInstanceID, radix: 16),
            certificateNotAfter: self.tls.current.certificateNotAfter.map { Date(timeIntervalSince1970: Double($0)) },
            services: configuration.services.map(\.name),
            listeners: Dictionary(
                uniqueKeysWithValues: configuration.listeners.map { ($0.name, self.boundAddress(ofListener: $0.name).map { "\($0)" } ?? "-") }))
    }

    struct HubState: Encodable, Sendable {
        var role = "hub"
        var listen: String
        var ready: Bool
        var notReady: String?
        var connectedEdges: Int
        var connectedAgents: Int
        var instance: String
        var certificateNotAfter: Date?
        var services: [String]
        var listeners: [String: String]
    }
}

/// The streams the hub has spliced to backends, by service and tenant, so that a reload that
/// takes a tenant off a service's list can reset what that tenant has open on it.
final class SplicedStreams: Sendable {
    private struct Entry {
        var service: String
        var tenant: String
        var stream: TetherStreamHandle
    }

    private let entries = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

    /// Tracks `stream` until `splicing` completes.
    func insert(_ stream: TetherStreamHandle, service: String, tenant: String, until splicing: EventLoopFuture<some Sendable>) {
        let key = ObjectIdentifier(stream)
        self.entries.withLockedValue { $0[key] = Entry(service: service, tenant: tenant, stream: stream) }
        splicing.whenComplete { _ in _ = self.entries.withLockedValue { $0.removeValue(forKey: key) } }
    }

    /// Resets with `UNKNOWN_SERVICE` every stream for which `forbidden(service, tenant)`; returns how many.
    func resetAll(where forbidden: (String, String) -> Bool) -> Int {
        let streams = self.entries.withLockedValue { entries in
            entries.values.filter { forbidden($0.service, $0.tenant) }.map(\.stream)
        }
        for stream in streams { stream.eventLoop.execute { stream.reset(.unknownService) } }
        return streams.count
    }
}
