import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import TetherTLS

/// What a relay tells its admin listener.
public protocol AdminSource: Sendable {
    /// Why the relay is not ready, or nil when it is (`/readyz`).
    var notReady: String? { get }
    /// The relay's state for `/v1/state`.
    func state() async -> any Encodable & Sendable
    /// Sets the gauges read at scrape time (certificate expiry, connections), before `/metrics`.
    func refreshGauges()
}

/// A relay's admin listener (README "Admin endpoints"), on Hummingbird:
///
/// - `GET /healthz`: 200 while the process serves requests — liveness, never a token;
/// - `GET /readyz`: 200 when the relay does its job (edge: a connection to a hub is up; hub: it
///   accepts edges and is not draining), else 503 with the reason — never a token;
/// - `GET /metrics`: the Prometheus text exposition of every metric the process records;
/// - `GET /v1/state`: the relay's state as JSON.
///
/// `/metrics` and `/v1/state` need `Authorization: Bearer <token>` of a configured operator
/// when any is configured (always on the hub); the presented token's SHA-256 is compared in
/// constant time with each stored one. A refusal is 401 and a log line naming the peer, never the
/// token.
public final class AdminServer: Service, Sendable {
    private let operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>
    private let listen: Endpoint
    private let application: Application<RouterResponder<AdminRequestContext>>
    private let bound = Readiness<SocketAddress>()
    private let logger: Logger

    public init(
        configuration: AdminConfiguration, source: any AdminSource, metrics: @escaping @Sendable () -> [UInt8],
        group: any EventLoopGroup, logger: Logger
    ) {
        let operators = NIOLockedValueBox(configuration.operators)
        let router = Router(context: AdminRequestContext.self)
        router.get("healthz") { _, _ in Self.text(.ok, "ok\n") }
        router.get("readyz") { _, _ in
            guard let reason = source.notReady else { return Self.text(.ok, "ready\n") }
            return Self.text(.serviceUnavailable, "not ready: \(reason)\n")
        }
        router.get("metrics") { request, context in
            if let refusal = Self.refusal(request, context, operators: operators, logger: logger) { return refusal }
            source.refreshGauges()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics())))
        }
        router.get("v1/state") { request, context in
            if let refusal = Self.refusal(request, context, operators: operators, logger: logger) { return refusal }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            let body = try encoder.encode(await source.state())
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: body)))
        }
        let address: BindAddress =
            switch configuration.listen {
            case .tcp(let host, let port): .hostname(host, port: port)
            case .unix(let path): .unixDomainSocket(path: path)
            }
        let bound = self.bound
        self.operators = operators
        self.listen = configuration.listen
        self.logger = logger
        self.application = Application(
            router: router, configuration: .init(address: address, serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                bound.resolve(channel.localAddress.map { .success($0) } ?? .failure(RelayError("the admin listener has no address")))
            },
            eventLoopGroupProvider: .shared(group), logger: logger)
    }

    /// Where the admin listener listens, once bound.
    public var localAddress: SocketAddress {
        get async throws { try await self.bound.value }
    }

    /// Puts `configuration`'s operator tokens in force (SIGHUP); a new `listen` needs a restart.
    public func reload(_ configuration: AdminConfiguration) {
        self.operators.withLockedValue { $0 = configuration.operators }
        if configuration.listen != self.listen {
            self.logger.warning("changed, in force after a restart: admin.listen")
        }
    }

    public func run() async throws {
        do {
            try await self.application.run()
        } catch {
            self.bound.resolve(.failure(error))
            throw RelayError("admin listener \(self.listen): \(error)")
        }
    }

    private static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Nil when `request` may proceed: no operator is configured, or it carries one's token.
    private static func refusal(
        _ request: Request, _ context: AdminRequestContext, operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>,
        logger: Logger
    ) -> Response? {
        let tokens = operators.withLockedValue { $0 }
        guard !tokens.isEmpty else { return nil }
        let presented = request.headers[.authorization].flatMap { value -> Substring? in
            let parts = value.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
            return parts[1].drop { $0 == " " }
        }
        if let presented, TokenMatch.first(presented, in: tokens, digest: \.sha256) != nil { return nil }
        logger.notice(
            "admin request refused: no valid operator token",
            metadata: ["path": "\(request.uri.path)", "peer": "\(context.remoteAddress.map { "\($0)" } ?? "-")"])
        var response = Self.text(.unauthorized, "an operator token is required: Authorization: Bearer <token>\n")
        response.headers[.wwwAuthenticate] = "Bearer realm=\"tether\""
        return response
    }
}

/// Hummingbird's request context with the peer's address, for the refusal's log line.
struct AdminRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}
