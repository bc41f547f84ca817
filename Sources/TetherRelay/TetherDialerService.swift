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

/// Dials a Tether acceptor and keeps the connection as a swift-service-lifecycle `Service`:
///
/// - it dials again after a connection ends, with full-jitter exponential backoff reset once a
///   connection has stayed up for a while; failures that retrying cannot fix (an unknown CA, an
///   expired certificate, a refused or replaced identity: ``Failure``) wait longer, and the log
///   says what is wrong; every reconnect is counted with its reason
///   (`tether_reconnects_total{reason}`);
/// - on the acceptor's GOAWAY `NO_ERROR` it dials the replacement before the old connection closes,
///   after a random delay within the acceptor's `REDIAL_WINDOW_MS` (spec §10.2.1), while the old
///   one's streams finish; new streams wait for the new connection (``connection(waitingAtMost:on:)``);
/// - graceful shutdown sends GOAWAY (spec §10.2), lets open streams finish within the session's
///   GOAWAY grace, and returns.
public final class TetherDialerService: Service, Sendable {
    public struct Configuration: Sendable {
        /// Resolved again on every attempt (a name may move).
        public var host: String
        public var port: Int
        /// More acceptors to try: attempt n dials the n-th of `host:port` and these, in turn.
        public var alternatives: [(host: String, port: Int)] = []
        public var connection: TetherConnectionHandler.Configuration
        public var queueLimits = TetherTransport.QueueLimits()
        public var backoff = Backoff()
        /// `TCP_USER_TIMEOUT`: the kernel ends the connection when data sent stays unacknowledged
        /// this long, so a dead path is noticed even while the sender has data queued (keepalive
        /// PINGs cannot get through then). Nil leaves the system default.
        public var userTimeout: TimeAmount? = .seconds(45)
        /// The local address (port 0) connections leave from; nil lets the system choose.
        public var source: SocketAddress?
        /// True: each acceptor's certificate must match the host dialed (`host`, or the
        /// alternative tried), in place of the TLS configuration's server name.
        public var verifiesDialedHost = false
        /// An HTTP CONNECT proxy on the way out, for the acceptors its `noProxy` does not match.
        public var proxy: EgressProxy?

        public init(host: String, port: Int, connection: TetherConnectionHandler.Configuration = .init(role: .dialer)) {
            self.host = host
            self.port = port
            self.connection = connection
        }
    }

    /// Full-jitter exponential backoff: attempt n waits a random time in 0…min(cap, base × 2ⁿ).
    public struct Backoff: Sendable {
        public var base: Duration = .milliseconds(500)
        public var cap: Duration = .seconds(30)
        /// A connection up this long resets the attempts.
        public var stable: Duration = .seconds(60)
        /// After a ``Failure`` that retrying cannot fix: a wait between half this and this.
        public var permanent: Duration = .seconds(120)
        /// The share of the ceiling each wait takes: uniform in 0…1 (full jitter); a test pins it.
        public var jitter: @Sendable () -> Double = { Double.random(in: 0...1) }

        public init() {}

        /// The wait before attempt `attempt` (0 for the first retry).
        public func delay(attempt: Int) -> Duration {
            let ceiling = min(self.cap, self.base * Double(1 << min(attempt, 30)))
            return ceiling * self.jitter()
        }

        /// The wait after a failure that retrying cannot fix.
        public var permanentDelay: Duration { self.permanent * (0.5 + 0.5 * self.jitter()) }
    }

    /// Why a connection attempt failed or a connection ended: the reconnect counter's `reason`,
    /// and whether dialing again soon can help.
    public struct Failure: Sendable, Hashable, CustomStringConvertible {
        public var reason: String
        /// Dialing again cannot help until someone changes something (a certificate, a CA, the
        /// hub's revocation list): the dialer waits ``Backoff/permanent``.
        public var isPermanent: Bool
        /// What to check, for the log.
        public var advice: String?

        public var description: String { self.reason + (self.advice.map { ": " + $0 } ?? "") }

        /// A failed attempt; `proxy` names the proxy it went through, if any.
        public init(_ error: any Error, through proxy: String? = nil) {
            self.advice = "\(error)"
            switch error {
            case let error as EgressProxyError:
                // Wrong credentials stay wrong; a refusal may be the hub being down behind it.
                self.reason = error.reason
                self.isPermanent = error.isPermanent
                self.advice = "through the proxy at \(proxy ?? "?"): \(error)"
            case let error as TLSError:
                self.reason = "tls-\(error.code)"
                let permanent: Set<TLSError.Code> = [
                    .unknownCA, .certificateExpired, .nameMismatch, .invalidIdentity, .wrongALPN, .protocolVersion,
                    .noClientCertificate, .configuration,
                ]
                self.isPermanent = permanent.contains(error.code)
                if error.code == .unknownCA {
                    let path = proxy.map { "the connection goes through the proxy at \($0), which" } ?? "a TLS-inspecting proxy on the way"
                    self.advice = "\(error) — check the trusted CAs; \(path) may be replacing the hub's certificate (TLS inspection)"
                }
            case let error as TetherError where error.errorCode == .versionMismatch:
                self.reason = "version-mismatch"
                self.isPermanent = true
            case let error as TetherError where error.errorCode != nil:
                // Refused at admission (spec §10.3): the preface came, then GOAWAY.
                self = Failure(ended: error.errorCode, debug: error.detail)
            default:
                self.reason = "dial-failed"
                self.isPermanent = false
                if let proxy { self.advice = "to the proxy at \(proxy): \(error)" }
            }
        }

        /// A connection that ended, with the GOAWAY code that ended it, if any (spec §10.2, §10.3).
        public init(ended code: ErrorCode?, debug: String) {
            self.reason = code.map { "goaway-\($0.name.lowercased())" } ?? "closed"
            self.isPermanent = code == .refused || code == .replaced
            self.advice = debug.isEmpty ? nil : debug
        }
    }

    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let tls: TLSContextStore?
    private let logger: Logger
    private let inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler?
    private let onConnection: @Sendable (TetherConnection) -> Void
    private let state = NIOLockedValueBox(State())

    private struct State {
        /// The connection new streams go on; nil while none is up or the one up is draining.
        var current: TetherConnection?
        /// Callers waiting for a connection to open streams on.
        var waiting: [ObjectIdentifier: EventLoopPromise<TetherConnection>] = [:]
        var stopped = false
        var status = Status()
    }

    /// Where the dialer stands, for the edge's `/v1/state` (README "Admin endpoints").
    public struct Status: Sendable, Encodable {
        public enum Phase: String, Sendable, Encodable {
            /// Dialing, or waiting to dial again.
            case connecting
            /// A connection new streams go on is up.
            case connected
            /// The service is stopping.
            case stopped
        }

        public var state = Phase.connecting
        /// The acceptor connected to (`host:port` as configured) and since when.
        public var hub: String?
        public var connectedSince: Date?
        /// The last failed attempt or ended connection: its reconnect reason, what to check, when.
        public var lastError: LastError?
        /// Failed attempts and ended connections since the service started.
        public var reconnects = 0

        public struct LastError: Sendable, Encodable {
            public var reason: String
            public var detail: String
            public var at: Date
        }
    }

    /// Where the dialer stands now.
    public var status: Status { self.state.withLockedValue { $0.status } }

    public init(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, configuration: Configuration,
        tls: TLSContextStore?, logger: Logger = Logger(label: "tether.dialer"),
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil,
        onConnection: @escaping @Sendable (TetherConnection) -> Void = { _ in }
    ) {
        self.group = group
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.inboundStreamHandler = inboundStreamHandler
        self.onConnection = onConnection
    }

    /// The connection new streams go on, while one is up and not draining.
    public var connection: TetherConnection? { self.state.withLockedValue { $0.current } }

    /// The connection new streams go on, waiting up to `timeout` for one while none is up (during
    /// a hub's drain, the replacement is being dialed). Fails with ``TetherError/Code/connectionClosed``
    /// when none came in time or the service stopped.
    public func connection(waitingAtMost timeout: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<TetherConnection> {
        let promise = eventLoop.makePromise(of: TetherConnection.self)
        let key = ObjectIdentifier(promise.futureResult)
        let ready = self.state.withLockedValue { state -> Result<TetherConnection, TetherError>? in
            if let current = state.current { return .success(current) }
            if state.stopped { return .failure(TetherError.closed(nil, "the dialer has stopped")) }
            state.waiting[key] = promise
            return nil
        }
        if let ready {
            promise.completeWith(ready.mapError { $0 })
            return promise.futureResult
        }
        let timer = eventLoop.scheduleTask(in: timeout) {
            let expired = self.state.withLockedValue { $0.waiting.removeValue(forKey: key) }
            expired?.fail(TetherError.closed(nil, "no connection to a hub within \(timeout)"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    /// `connection` refused a new stream because it is draining (its GOAWAY arrived before this
    /// service saw it): new streams wait for the replacement from now on.
    public func draining(_ connection: TetherConnection) {
        self.state.withLockedValue { state in
            if state.current?.channel === connection.channel { state.current = nil }
        }
    }

    /// Opens a stream on the connection, waiting up to `timeout` for one; a connection that turns
    /// out to be draining (spec §10.2) is passed over for its replacement.
    public func openStream(
        service: String, class streamClass: StreamClass, waitingAtMost timeout: TimeAmount, on eventLoop: any EventLoop
    ) -> EventLoopFuture<TetherStreamHandle> {
        self.connection(waitingAtMost: timeout, on: eventLoop).flatMap { connection in
            connection.openStreamHandle(service: service, class: streamClass).flatMapError { error in
                guard (error as? TetherError)?.openError == .draining else { return eventLoop.makeFailedFuture(error) }
                self.draining(connection)
                return self.connection(waitingAtMost: timeout, on: eventLoop).flatMap {
                    $0.openStreamHandle(service: service, class: streamClass)
                }
            }
        }
    }

    private func publish(_ connection: TetherConnection?, hub: String? = nil) {
        let waiting = self.state.withLockedValue { state -> [EventLoopPromise<TetherConnection>] in
            state.current = connection
            if connection != nil {
                state.status.state = .connected
                state.status.hub = hub
                state.status.connectedSince = Date()
            } else if !state.stopped {
                state.status.state = .connecting
            }
            guard connection != nil else { return [] }
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for promise in waiting { promise.succeed(connection!) }
    }

    private func stop() {
        let waiting = self.state.withLockedValue { state -> [EventLoopPromise<TetherConnection>] in
            state.current = nil
            state.stopped = true
            state.status.state = .stopped
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for promise in waiting { promise.fail(TetherError.closed(nil, "the dialer has stopped")) }
    }

    private func count(_ failure: Failure) {
        self.state.withLockedValue { state in
            state.status.reconnects += 1
            // A hub's graceful drain (spec §10.2) is not an error.
            guard failure.reason != Failure(ended: .noError, debug: "").reason else { return }
            state.status.lastError = .init(reason: failure.reason, detail: failure.advice ?? "", at: Date())
        }
        Counter(
            label: "tether_reconnects_total", dimensions: [("reason", failure.reason)],
            factory: self.configuration.connection.metricsFactory ?? MetricsSystem.factory
        ).increment()
    }

    public func run() async throws {
        var attempt = 0
        var tries = 0
        var draining: [TetherConnection] = []
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                let started = ContinuousClock.now
                var failure: Failure
                var redialAfter: Duration? = nil
                let targets = [(self.configuration.host, self.configuration.port)] + self.configuration.alternatives
                let (host, port) = targets[tries % targets.count]
                tries += 1
                let proxy = self.configuration.proxy.flatMap { $0.noProxy.bypasses(host) ? nil : $0 }
                do {
                    let address: SocketAddress
                    var tunnel: HTTPConnectTunnel?
                    if let proxy {
                        // The proxy resolves the hub's name; CONNECT names it as configured.
                        address = try SocketAddress.makeAddressResolvingHost(proxy.host, port: proxy.port)
                        let target = host.contains(":") ? "[\(host)]" : host
                        tunnel = HTTPConnectTunnel(host: target, port: port, headers: try proxy.connectHeaders(for: "\(target):\(port)"))
                    } else {
                        address = try SocketAddress.makeAddressResolvingHost(host, port: port)
                    }
                    let connection = try await TetherTransport.dial(
                        group: self.group, to: address, tls: try self.tls.map { _ = try $0.reloadIfChanged(); return $0.current },
                        configuration: self.configuration.connection, inboundStreamHandler: self.inboundStreamHandler,
                        queueLimits: self.configuration.queueLimits, userTimeout: self.configuration.userTimeout,
                        serverName: self.configuration.verifiesDialedHost ? host : nil, through: tunnel,
                        from: self.configuration.source)
                    let window = try await connection.ready().redialWindowMilliseconds
                    self.publish(connection, hub: "\(host):\(port)")
                    // A shutdown that came while this connection was being set up found nothing
                    // to drain: drain it now, or the dialer would wait for the hub to close it.
                    if Task.isShuttingDownGracefully { connection.goAway() }
                    self.logger.info(
                        "connected", metadata: ["hub": "\(host):\(port)", "address": "\(address)", "proxy": "\(proxy?.description ?? "none")"])
                    self.onConnection(connection)
                    if let goAway = try? await connection.goAwayReceived() {
                        self.publish(nil)  // no new streams on it (spec §10.2 step 2)
                        failure = Failure(ended: goAway.code, debug: goAway.debug)
                        if goAway.code == .noError {
                            // spec §10.2.1: the replacement first, spread over the hub's window;
                            // the old connection finishes its streams meanwhile.
                            redialAfter = .milliseconds(Int64(window)) * self.configuration.backoff.jitter()
                            draining.append(connection)
                        } else {
                            _ = await connection.closed()
                        }
                    } else {
                        failure = Failure(ended: await connection.closed(), debug: "")
                        self.publish(nil)
                    }
                    self.logger.notice("connection ended", metadata: ["reason": "\(failure)"])
                } catch {
                    failure = Failure(error, through: proxy?.description)
                    if failure.isPermanent {
                        self.logger.error("dial failed; dialing again cannot help until this is fixed", metadata: ["error": "\(failure)"])
                    } else {
                        self.logger.warning("dial failed", metadata: ["error": "\(failure)"])
                    }
                }
                self.count(failure)
                draining.removeAll { !$0.channel.isActive }
                if ContinuousClock.now - started >= self.configuration.backoff.stable { attempt = 0 }
                guard !Task.isShuttingDownGracefully else { break }
                let delay: Duration
                if let redialAfter {
                    delay = redialAfter
                    attempt = 0
                } else if failure.isPermanent {
                    delay = self.configuration.backoff.permanentDelay
                } else {
                    delay = self.configuration.backoff.delay(attempt: attempt)
                    attempt += 1
                }
                do {
                    // A shutdown cuts the backoff short: up to `cap` of waiting is not a drain.
                    try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                } catch {
                    break
                }
            }
        } onGracefulShutdown: {
            // The connection drains (spec §10.2): the loop above sees it close, and stops. The
            // session itself ends what is left when its GOAWAY grace runs out.
            self.state.withLockedValue { $0.current }?.goAway()
        }
        self.stop()
        for connection in draining { _ = await connection.closed() }
    }

}
