import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Tether
import TetherTLS
import TetherWire

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
/// With an ``AgentDirectory`` (the hub), also:
///
/// - `GET /v1/agents`: the connected agents as JSON — an operator's token sees every tenant's, a
///   front door token (README "Front door") only its own tenant's;
/// - `GET /v1/agents/{tenant}/{agent}`: one of them; an agent the token may not see is the same
///   `404` as one that is not connected;
/// - `GET /v1/agents/{tenant}/{agent}/metadata`: its latest METADATA document, by the same rules;
/// - `GET /v1/agents/{tenant}/{agent}/logs/{source}?follow=true&cursor=…&file=…`: a LOGS stream from the
///   agent's source as NDJSON (spec/LOGS.md §5), by the same rules;
/// - `GET /`: the status page (``StatusPage``), for operators.
///
/// Every endpoint but the health checks needs `Authorization: Bearer <token>` — or Basic with the
/// token as the password, which is what a browser sends — of a configured operator when any is
/// configured (always on the hub); the presented token's SHA-256 is compared in constant time
/// with each stored one. A refusal is 401 and a log line naming the peer, never the token.
public final class AdminServer: Service, Sendable {
    private let operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>
    private let listen: Endpoint
    private let application: Application<RouterResponder<AdminRequestContext>>
    private let bound = Readiness<SocketAddress>()
    private let logger: Logger

    public init(
        configuration: AdminConfiguration, source: any AdminSource, agents: (any AgentDirectory)? = nil,
        metrics: @escaping @Sendable () -> [UInt8], group: any EventLoopGroup, logger: Logger
    ) {
        let operators = NIOLockedValueBox(configuration.operators)
        let router = Router(context: AdminRequestContext.self)
        let refusal = { @Sendable (request: Request, context: AdminRequestContext) -> Response? in
            Self.refusal(request, context, operators: operators, logger: logger)
        }
        router.get("healthz") { _, _ in Self.text(.ok, "ok\n") }
        router.get("readyz") { _, _ in
            guard let reason = source.notReady else { return Self.text(.ok, "ready\n") }
            return Self.text(.serviceUnavailable, "not ready: \(reason)\n")
        }
        router.get("metrics") { request, context in
            if let refusal = refusal(request, context) { return refusal }
            source.refreshGauges()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics())))
        }
        router.get("v1/state") { request, context in
            if let refusal = refusal(request, context) { return refusal }
            return try Self.json(.ok, await source.state())
        }
        if let agents {
            Self.route(agents, on: router, operators: operators, logger: logger)
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

    /// The agents API and the status page.
    private static func route(
        _ agents: any AgentDirectory, on router: Router<AdminRequestContext>,
        operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>, logger: Logger
    ) {
        // Whose agents a request may read, and who it is (a LOGS stream names them to the edge).
        enum Reader {
            case everyTenant(user: String)
            case tenant(String, user: String)
            case refused(Response)
        }
        @Sendable func reader(_ request: Request, _ context: AdminRequestContext) -> Reader {
            if let id = Self.operatorID(request, operators) { return .everyTenant(user: "operator:\(id)") }
            if let secret = Self.secret(request), let token = TokenMatch.first(secret, in: agents.tenantTokens, digest: \.sha256) {
                return .tenant(token.tenant, user: token.user)
            }
            return .refused(Self.unauthorized(request, context, logger: logger))
        }
        // The agent a request names, when it may see it, and who asks.
        enum Asked {
            case refused(Response)
            case agent(TetherIdentity?, user: String)
        }
        @Sendable func agent(_ request: Request, _ context: AdminRequestContext) -> Asked {
            let asked = context.parameters.get("tenant") ?? ""
            let identity = TetherIdentity(tenant: asked, agentID: context.parameters.get("agent") ?? "")
            switch reader(request, context) {
            case .refused(let refusal): return .refused(refusal)
            case .everyTenant(let user): return .agent(identity, user: user)
            // Another tenant's agent is answered as one that is not there, and is never looked up.
            case .tenant(let tenant, let user): return .agent(tenant == asked ? identity : nil, user: user)
            }
        }
        router.get("v1/agents") { request, context in
            switch reader(request, context) {
            case .refused(let refusal): return refusal
            case .everyTenant: return try Self.json(.ok, AgentList(agents: await agents.agents(tenant: nil)))
            case .tenant(let tenant, _): return try Self.json(.ok, AgentList(agents: await agents.agents(tenant: tenant)))
            }
        }
        router.get("v1/agents/:tenant/:agent") { request, context in
            let identity: TetherIdentity?
            switch agent(request, context) {
            case .refused(let refusal): return refusal
            case .agent(let named, _): identity = named
            }
            if let identity, let status = await agents.agent(identity) { return try Self.json(.ok, status) }
            return try Self.json(.notFound, ["error": Self.noSuchAgent])
        }
        router.get("v1/agents/:tenant/:agent/metadata") { request, context in
            let identity: TetherIdentity?
            switch agent(request, context) {
            case .refused(let refusal): return refusal
            case .agent(let named, _): identity = named
            }
            guard let identity, let document = agents.latestMetadata(of: identity) else {
                return try Self.json(.notFound, ["error": "no metadata from such an agent"])
            }
            return try Self.metadata(document, of: identity)
        }
        router.get("v1/agents/:tenant/:agent/logs/:source") { request, context in
            let identity: TetherIdentity?
            let user: String
            switch agent(request, context) {
            case .refused(let refusal): return refusal
            case .agent(let named, let asker): (identity, user) = (named, asker)
            }
            guard let identity else { return try Self.json(.notFound, ["error": Self.noSuchAgent]) }
            return try await Self.logs(of: identity, request, context, user: user, agents: agents)
        }
        router.get("/") { request, context in
            if let refusal = Self.refusal(request, context, operators: operators, logger: logger) { return refusal }
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.cacheControl] = "no-store"
            // Nothing but the page itself and its inline style: no script, no frame, no fetch.
            headers[.init("Content-Security-Policy")!] =
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"
            let page = StatusPage.render(await agents.agents(tenant: nil), instance: agents.instance, now: Date())
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: page)))
        }
    }

    static let noSuchAgent = HubRelay.OpenFailure.agentNotConnected.httpAnswer(about: "").message

    /// A follow of the agent's log `source` (spec/LOGS.md §5): NDJSON, one object per message, read
    /// from the stream only as fast as the client takes them.
    private static func logs(
        of identity: TetherIdentity, _ request: Request, _ context: AdminRequestContext, user: String, agents: any AgentDirectory
    ) async throws -> Response {
        let query = request.uri.queryParameters
        let follow = query["follow"].map { $0 == "true" || $0 == "1" } ?? false
        let cursor = query["cursor"].map(String.init)
        if let cursor, LogCursor(cursor) == nil { return try Self.json(.badRequest, ["error": "the cursor does not parse"]) }
        let stream: TetherStream
        do {
            stream = try await agents.openLogs(
                of: identity, source: context.parameters.get("source") ?? "", file: query["file"].map(String.init), cursor: cursor,
                follow: follow, user: user)
        } catch {
            let (code, message) = error.httpAnswer(about: "log source")
            let status = HTTPResponse.Status(code: code)
            return try Self.json(status, ["error": message])
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.cacheControl] = "no-store"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                do {
                    for try await message in stream.messages(maxSize: LogMessage.maxLines + 1_024) {
                        guard let decoded = LogMessage(decoding: message) else {
                            throw RelayError("the agent sent a LOGS message spec/LOGS.md §3 does not allow")
                        }
                        try await writer.write(decoded.ndjson())
                    }
                    try await writer.finish(nil)
                } catch {
                    // The client went away (seen at the latest when the edge's IDLE cannot be
                    // passed on), or the stream failed: the edge stops reading.
                    await stream.reset(.cancel)
                    throw error
                }
            })
    }

    /// `{tenant, agent, service, receivedAt, octets, omitted?, document}`, the document as the edge
    /// sent it (JSON already).
    private static func metadata(_ document: LatestMetadataStore.Document, of identity: TetherIdentity) throws -> Response {
        struct Header: Encodable {
            var tenant: String
            var agent: String
            var service: String
            var receivedAt: Date
            var octets: Int
            var omitted: String?
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        var body = ByteBuffer(
            data: try encoder.encode(
                Header(
                    tenant: identity.tenant, agent: identity.agentID, service: document.service, receivedAt: document.receivedAt,
                    octets: document.octets, omitted: document.omitted)))
        body.moveWriterIndex(to: body.writerIndex - 1)  // the closing brace: the document follows
        body.writeString(#","document":"#)
        if var json = document.body { body.writeBuffer(&json) } else { body.writeString("null") }
        body.writeString("}\n")
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }

    struct AgentList: Encodable {
        var agents: [AgentStatus]
    }

    private static func json(_ status: HTTPResponse.Status, _ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
    }

    private static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Nil when `request` may proceed: no operator is configured, or it carries one's token
    /// (Bearer, or Basic's password). Else a 401 and a log line.
    private static func refusal(
        _ request: Request, _ context: AdminRequestContext, operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>,
        logger: Logger
    ) -> Response? {
        Self.operatorID(request, operators) == nil ? Self.unauthorized(request, context, logger: logger) : nil
    }

    /// The token `request` presents: `Authorization: Bearer <token>`, or Basic's password.
    private static func secret(_ request: Request) -> Substring? {
        request.headers[.authorization].flatMap { TokenMatch.secret(inAuthorization: $0) }
    }

    /// The id of the operator whose token `request` carries — `-` when no operator is configured,
    /// so every request is an operator's — or nil.
    private static func operatorID(_ request: Request, _ operators: NIOLockedValueBox<[AdminConfiguration.OperatorToken]>) -> String? {
        let tokens = operators.withLockedValue { $0 }
        guard !tokens.isEmpty else { return "-" }
        return Self.secret(request).flatMap { TokenMatch.first($0, in: tokens, digest: \.sha256)?.id }
    }

    /// A 401, and a log line naming the peer — never the token.
    private static func unauthorized(_ request: Request, _ context: AdminRequestContext, logger: Logger) -> Response {
        logger.notice(
            "admin request refused: no valid operator token",
            metadata: ["path": "\(request.uri.path)", "peer": "\(context.remoteAddress.map { "\($0)" } ?? "-")"])
        var response = Self.text(.unauthorized, "an operator token is required: Authorization: Bearer <token>\n")
        // Basic too, so that a browser asks for the token (as the password) on the status page.
        response.headers[values: .wwwAuthenticate] = ["Bearer realm=\"tether\"", "Basic realm=\"tether\", charset=\"UTF-8\""]
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
