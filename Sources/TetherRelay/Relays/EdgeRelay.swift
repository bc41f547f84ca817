import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether
import TetherPolicy
import TetherTLS
import TetherWire

/// `tether edge`: keeps one mutual-TLS connection to a hub (``TetherDialerService``: the hubs in
/// turn, names resolved on every attempt, full-jitter backoff), forwards every connection its
/// local listeners accept as a stream to the configured hub service, and splices streams the
/// hub opens to the local targets it exposes, and turns each NDJSON line its metadata listeners
/// take into a filtered METADATA message. Nothing leaves that the customer's policy does not
/// allow (spec/POLICY.md): the edge refuses to start a forward or expose the policy lacks, and the
/// connection's ``PolicyEnforcer`` checks every stream either way.
public final class EdgeRelay: Service, Sendable {
    private let live: NIOLockedValueBox<EdgeConfiguration>
    private let dialer: TetherDialerService
    private let policy: PolicyEnforcer
    private let group: any EventLoopGroup
    private let logger: Logger
    private let listeners = ListenerSet()
    private let started = Readiness<Void>()
    private let tls: TLSContextStore
    private let audit: StreamAudit

    /// The configuration in force: the one it started with, as the last reload changed it.
    public var configuration: EdgeConfiguration { self.live.withLockedValue { $0 } }

    public init(
        configuration: EdgeConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tether.edge")
    ) throws {
        let policy: Policy
        do {
            policy = try PolicyFile.load(path: configuration.policy)
        } catch {
            throw RelayError("policy: \(error.description)")
        }
        let problems = configuration.problems(against: policy)
        guard problems.isEmpty else { throw RelayError(problems.joined(separator: "; ")) }
        guard case .tcp(let host, let port) = configuration.hubs[0] else { throw RelayError("a hub is dialed over TCP") }
        let tls = try TLSContextStore(
            configuration: TLSConfiguration(
                role: .client, certificateChainFile: configuration.tls.certificate, privateKeyFile: configuration.tls.key,
                trustedCAFiles: configuration.tls.trustedCAs, serverName: configuration.serverName ?? host))
        // Every line the edge logs, and every audit record, names the node it runs on.
        let identity = tls.current.identity.map { "\($0)" } ?? "-"
        let logger = {
            var logger = logger
            logger[metadataKey: "identity"] = "\(identity)"
            return logger
        }()
        let audit = StreamAudit(identity: identity)
        var settings = Settings()
        settings.implementationVersion = TetherRelease.packed
        settings.keepaliveIntervalMilliseconds = UInt32(configuration.dial.keepalive.nanoseconds / 1_000_000)
        var connection = TetherConnectionHandler.Configuration(role: .dialer, settings: settings)
        connection.session.goAwayGrace = configuration.drainGrace
        let enforcer = PolicyEnforcer(side: .edge, policy: policy, auditLogger: audit.logger)
        connection.policy = enforcer
        var dial = TetherDialerService.Configuration(host: host, port: port, connection: connection)
        dial.alternatives = configuration.hubs.dropFirst().compactMap {
            if case .tcp(let host, let port) = $0 { (host, port) } else { nil }
        }
        dial.backoff.base = .nanoseconds(configuration.dial.initial.nanoseconds)
        dial.backoff.cap = .nanoseconds(configuration.dial.maximum.nanoseconds)
        dial.backoff.stable = .nanoseconds(configuration.dial.resetAfter.nanoseconds)
        dial.backoff.permanent = .nanoseconds(configuration.dial.permanentFailureBackoff.nanoseconds)
        dial.userTimeout = configuration.dial.userTimeout
        dial.source = try configuration.dial.source.map { try SocketAddress(ipAddress: $0, port: 0) }
        dial.verifiesDialedHost = configuration.serverName == nil
        switch configuration.proxy {
        case .environment:
            do {
                dial.proxy = try EgressProxy.fromEnvironment(ProcessInfo.processInfo.environment)
            } catch {
                throw RelayError("HTTPS_PROXY: \(error.description)")
            }
        case .none: dial.proxy = nil
        case .configured(let proxy): dial.proxy = proxy
        }
        let live = NIOLockedValueBox(configuration)
        let traffic = TrafficMetrics()
        self.live = live
        self.tls = tls
        self.audit = audit
        self.policy = enforcer
        self.group = group
        self.logger = logger
        self.dialer = TetherDialerService(
            group: group, configuration: dial, tls: tls, logger: logger,
            inboundStreamHandler: { stream in
                // The policy already refused what it does not allow (POLICY_DENIED).
                let opened = StreamAudit.Opened(
                    agent: identity, openedBy: "plane:\(StreamAudit.user(of: stream))", service: stream.service,
                    streamClass: stream.streamClass)
                if stream.streamClass == .logs {
                    let source = live.withLockedValue { $0.logs.first { $0.name == stream.service } }
                    guard let source else {
                        audit.ended(opened, stream: stream.id, failure: "refused: no such log source")
                        return stream.refuse(.unknownService)
                    }
                    return LogFollower.serve(stream, from: source, logger: logger).whenSuccess { outcome in
                        audit.ended(opened, stream: stream.id, outcome: outcome)
                    }
                }
                let target = live.withLockedValue { $0.exposes.first { $0.name == stream.service }?.target }
                guard let target else {
                    audit.ended(opened, stream: stream.id, failure: "refused: no such expose")
                    return stream.refuse(.unknownService)
                }
                EndpointSockets.splice(stream, to: target).whenSuccess { outcome in
                    audit.ended(opened, stream: stream.id, outcome: outcome, failure: outcome == nil ? "target unreachable" : nil)
                }
            },
            onConnection: { traffic.track($0) })
    }

    /// Returns once every forward and metadata listener is bound (systemd's `READY=1`).
    public var listening: Void {
        get async throws { try await self.started.value }
    }

    /// Where each forward listens, once bound (a configured port 0 gets one from the system).
    public func boundAddress(ofForward name: String) -> SocketAddress? { self.listeners.localAddress(of: "forward/" + name) }

    /// Where each metadata listener listens, once bound.
    public func boundAddress(ofMetadataListener name: String) -> SocketAddress? {
        self.listeners.localAddress(of: "metadata/" + name)
    }

    /// The connection to the hub, while one is up.
    public var connection: TetherConnection? { self.dialer.connection }

    /// Where the dialer stands: connected since when, the last error, reconnects so far.
    public var dialerStatus: TetherDialerService.Status { self.dialer.status }

    /// Puts `new` in force under the running edge (SIGHUP; README "Reloading"): its policy —
    /// streams it now forbids are reset (spec/POLICY.md §7.3) —, forwards, metadata listeners and
    /// exposes. A policy that does not load or a listener that cannot be bound throws, and
    /// nothing changes. A forward or expose the new policy lacks is logged, not refused: the
    /// policy is the customer's, and a tightened one takes effect whatever the configuration
    /// says. The keys read only at start (hubs, tls, serverName, dial, proxy, drain) are logged
    /// when they changed. The TLS files themselves are read again on every dial.
    public func reload(_ new: EdgeConfiguration) async throws(RelayError) {
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

    private func reloading(_ new: EdgeConfiguration) async throws {
        try await self.started.value
        let policy: Policy
        do {
            policy = try PolicyFile.load(path: new.policy)
        } catch {
            throw RelayError("policy: \(error.description)")
        }
        let changes = try await self.listeners.apply(Self.listeners(of: new)) { try await self.bind($0, in: new) }
        let old = self.live.withLockedValue { live in
            defer { live = new }
            return live
        }
        self.policy.reload(policy)
        for problem in new.problems(against: policy) { self.logger.warning("refused by the policy: \(problem)") }
        let restart = Self.readAtStart(old, new)
        if !restart.isEmpty {
            self.logger.warning("changed, in force after a restart: \(restart.joined(separator: ", "))")
        }
        self.logger.notice(
            "configuration reloaded",
            metadata: ["bound": "\(changes.bound.joined(separator: ","))", "closed": "\(changes.closed.joined(separator: ","))"])
    }

    /// The keys of `new` that differ from `old` and are read only at start.
    private static func readAtStart(_ old: EdgeConfiguration, _ new: EdgeConfiguration) -> [String] {
        var changed: [String] = []
        if old.hubs != new.hubs { changed.append("hubs") }
        if old.tls != new.tls { changed.append("tls") }
        if old.serverName != new.serverName { changed.append("serverName") }
        if old.dial != new.dial { changed.append("dial") }
        if old.proxy != new.proxy { changed.append("proxy") }
        if old.drainGrace != new.drainGrace { changed.append("drain") }
        return changed
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
        await EndpointSockets.run(self.dialer, closingOnShutdown: self.listeners)
    }

    /// The listeners `configuration` names: `forward/<name>` and `metadata/<name>`.
    private static func listeners(of configuration: EdgeConfiguration) -> [String: Endpoint] {
        var listeners: [String: Endpoint] = [:]
        for forward in configuration.forwards { listeners["forward/" + forward.name] = forward.listen }
        for metadata in configuration.metadata { listeners["metadata/" + metadata.name] = metadata.listen }
        return listeners
    }

    private func bind(_ key: String, in configuration: EdgeConfiguration) async throws -> any Channel {
        if key.hasPrefix("forward/"), let forward = configuration.forwards.first(where: { "forward/" + $0.name == key }) {
            return try await self.listen(for: forward)
        }
        guard let metadata = configuration.metadata.first(where: { "metadata/" + $0.name == key }) else {
            throw RelayError("no listener \(key)")
        }
        return try await self.listen(for: metadata)
    }

    /// A forward: each accepted connection becomes one stream to the forward's service — as the
    /// configuration in force defines it when the connection arrives.
    private func listen(for bound: EdgeConfiguration.Forward) async throws -> any Channel {
        let dialer = self.dialer
        let logger = self.logger
        let live = self.live
        let audit = self.audit
        let identity = "\(logger[metadataKey: "identity"] ?? "-")"
        let listener = try await EndpointSockets.listen(bound.listen, group: self.group) { channel in
            let (forward, wait) = live.withLockedValue { live in
                (live.forwards.first { $0.name == bound.name } ?? bound, live.dial.waitForHub)
            }
            let opened = StreamAudit.Opened(
                agent: identity, openedBy: "local:\(channel.remoteAddress.map { "\($0)" } ?? "unix")", service: forward.service,
                streamClass: forward.streamClass)
            // While the hub's replacement connection is being dialed (spec §10.2.1), or the
            // edge is reconnecting, a new connection waits for it rather than being refused.
            let opening = dialer.openStream(
                service: forward.service, class: forward.streamClass, waitingAtMost: wait, on: channel.eventLoop)
            EndpointSockets.splice(channel, toStreamOpening: opening).whenComplete { result in
                switch result {
                case .success(let (stream, outcome)):
                    audit.ended(opened, stream: stream.id, outcome: outcome)
                case .failure(let error):
                    logger.warning("not forwarded", metadata: ["forward": "\(forward.name)", "error": "\(error)"])
                    audit.ended(opened, stream: nil, failure: "not opened: \(error)")
                }
            }
        }
        self.logger.info("forwarding", metadata: ["forward": "\(bound.name)", "listen": "\(bound.listen)"])
        return listener
    }

    /// A metadata listener: each accepted connection gets one METADATA stream, and each of its
    /// NDJSON lines becomes one message on it (``MetadataIntake``).
    private func listen(for bound: EdgeConfiguration.MetadataListener) async throws -> any Channel {
        let dialer = self.dialer
        let logger = self.logger
        let live = self.live
        let counters = MetadataIntake.Counters(listener: bound.name)
        let listener = try await EndpointSockets.listen(bound.listen, group: self.group) { channel in
            let (configured, wait) = live.withLockedValue { live in
                (live.metadata.first { $0.name == bound.name } ?? bound, live.dial.waitForHub)
            }
            let opening = dialer.openStream(
                service: configured.service, class: .metadata, waitingAtMost: wait, on: channel.eventLoop)
            opening.whenFailure { error in
                logger.warning("metadata not taken", metadata: ["listener": "\(configured.name)", "error": "\(error)"])
            }
            EndpointSockets.join(channel, toStreamOpening: opening) { channel, stream in
                do {
                    try channel.pipeline.syncOperations.addHandlers(
                        ByteToMessageHandler(MetadataLineDecoder(maximumLength: configured.maxLine)),
                        MetadataIntake(stream: stream, counters: counters))
                } catch {
                    stream.eventLoop.execute { stream.reset(.cancel) }
                    channel.close(promise: nil)
                }
            }
        }
        self.logger.info("taking metadata", metadata: ["listener": "\(bound.name)", "listen": "\(bound.listen)"])
        return listener
    }
}

extension EdgeRelay: AdminSource {
    /// Ready while a connection to a hub is up (the tunnel is up).
    public var notReady: String? {
        guard self.dialer.connection == nil else { return nil }
        let status = self.dialer.status
        return "no connection to a hub" + (status.lastError.map { " (last: \($0.reason))" } ?? "")
    }

    public func refreshGauges() {
        Gauge(label: "tether_hub_connected").record(self.dialer.connection == nil ? 0 : 1)
        RelayGauges.recordCertificateExpiry(self.tls)
    }

    /// `/v1/state`: the hubs, the connection's state and last error, its streams by class.
    public func state() async -> any Encodable & Sendable {
        let configuration = self.configuration
        var streams: [String: RelayStreams] = [:]
        if let connection = self.dialer.connection {
            streams = await RelayStreams.byClass(of: [connection])
        }
        return EdgeState(
            hubs: configuration.hubs.map(\.description), connection: self.dialer.status, streams: streams,
            certificateNotAfter: self.tls.current.certificateNotAfter.map { Date(timeIntervalSince1970: Double($0)) },
            forwards: Dictionary(uniqueKeysWithValues: configuration.forwards.map { ($0.name, self.boundAddress(ofForward: $0.name).map { "\($0)" } ?? "-") }),
            exposes: configuration.exposes.map(\.name))
    }

    struct EdgeState: Encodable, Sendable {
        var role = "edge"
        var hubs: [String]
        var connection: TetherDialerService.Status
        var streams: [String: RelayStreams]
        var certificateNotAfter: Date?
        var forwards: [String: String]
        var exposes: [String]
    }
}

/// A relay that cannot start, and why.
public struct RelayError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
