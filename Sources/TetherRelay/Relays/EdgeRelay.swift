import Foundation
import Logging
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
    public let configuration: EdgeConfiguration
    private let dialer: TetherDialerService
    private let policy: PolicyEnforcer
    private let group: any EventLoopGroup
    private let logger: Logger
    private let bound = NIOLockedValueBox<[String: SocketAddress]>([:])
    private let started = Readiness<Void>()

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
        var settings = Settings()
        settings.keepaliveIntervalMilliseconds = UInt32(configuration.dial.keepalive.nanoseconds / 1_000_000)
        var connection = TetherConnectionHandler.Configuration(role: .dialer, settings: settings)
        connection.session.goAwayGrace = configuration.drainGrace
        let enforcer = PolicyEnforcer(side: .edge, policy: policy)
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
        let exposes = Dictionary(uniqueKeysWithValues: configuration.exposes.map { ($0.name, $0.target) })
        self.configuration = configuration
        self.policy = enforcer
        self.group = group
        self.logger = logger
        self.dialer = TetherDialerService(
            group: group, configuration: dial, tls: tls, logger: logger,
            inboundStreamHandler: { stream in
                // The policy already refused what it does not allow (POLICY_DENIED).
                guard let target = exposes[stream.service] else { return stream.refuse(.unknownService) }
                _ = EndpointSockets.splice(stream, to: target, group: group)
            })
    }

    /// Returns once every forward and metadata listener is bound (systemd's `READY=1`).
    public var listening: Void {
        get async throws { try await self.started.value }
    }

    /// Where each forward listens, once bound (a configured port 0 gets one from the system).
    public func boundAddress(ofForward name: String) -> SocketAddress? { self.bound.withLockedValue { $0[name] } }

    /// Where each metadata listener listens, once bound.
    public func boundAddress(ofMetadataListener name: String) -> SocketAddress? {
        self.bound.withLockedValue { $0["metadata/" + name] }
    }

    /// The connection to the hub, while one is up.
    public var connection: TetherConnection? { self.dialer.connection }

    /// Reads the policy file again (SIGHUP): streams it now forbids are reset (spec/POLICY.md
    /// §7.3); a file that does not load leaves the policy in force, and is logged. The TLS files
    /// are read again on every dial anyway.
    public func reload() {
        try? self.policy.reload(fromFile: self.configuration.policy)
    }

    public func run() async throws {
        do {
            try await self.runListening()
        } catch {
            self.started.resolve(.failure(error))
            throw error
        }
    }

    private func runListening() async throws {
        var listeners: [any Channel] = []
        for forward in self.configuration.forwards {
            let dialer = self.dialer
            let logger = self.logger
            let wait = self.configuration.dial.waitForHub
            let listener = try await EndpointSockets.listen(forward.listen, group: self.group) { channel in
                // While the hub's replacement connection is being dialed (spec §10.2.1), or the
                // edge is reconnecting, a new connection waits for it rather than being refused.
                let opening = dialer.openStream(
                    service: forward.service, class: forward.streamClass, waitingAtMost: wait, on: channel.eventLoop)
                opening.whenFailure { error in
                    logger.warning("not forwarded", metadata: ["forward": "\(forward.name)", "error": "\(error)"])
                }
                EndpointSockets.splice(channel, toStreamOpening: opening)
            }
            if let address = listener.localAddress { self.bound.withLockedValue { $0[forward.name] = address } }
            self.logger.info("forwarding", metadata: ["forward": "\(forward.name)", "listen": "\(forward.listen)"])
            listeners.append(listener)
        }
        for configured in self.configuration.metadata {
            listeners.append(try await self.listen(for: configured))
        }
        self.started.resolve(.success(()))
        await EndpointSockets.run(self.dialer, closingOnShutdown: listeners)
    }

    /// A metadata listener: each accepted connection gets one METADATA stream, and each of its
    /// NDJSON lines becomes one message on it (``MetadataIntake``).
    private func listen(for configured: EdgeConfiguration.MetadataListener) async throws -> any Channel {
        let dialer = self.dialer
        let logger = self.logger
        let wait = self.configuration.dial.waitForHub
        let counters = MetadataIntake.Counters(listener: configured.name)
        let listener = try await EndpointSockets.listen(configured.listen, group: self.group) { channel in
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
        if let address = listener.localAddress { self.bound.withLockedValue { $0["metadata/" + configured.name] = address } }
        self.logger.info("taking metadata", metadata: ["listener": "\(configured.name)", "listen": "\(configured.listen)"])
        return listener
    }
}

/// A relay that cannot start, and why.
public struct RelayError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
