import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Tether
import TetherTLS
import TetherWire

/// The hub's front door: an HTTP CONNECT proxy over TLS for programs in the plane that know
/// nothing of Tether (curl, kubectl, a UI backend). `CONNECT <target>.<agent>.<tenant>.<zone>:<port>`
/// (spec/RELAYS.md §4) with a tenant's token opens a stream toward that agent's exposed target on
/// behalf of the token's user, and answers `200` only once the edge has connected the target
/// (OPENED, spec/PROTOCOL.md §5.8); then the socket and the stream are spliced.
public struct FrontDoorConfiguration: Sendable {
    public var listen: Endpoint
    /// The front door's own certificate and key: what its clients verify (`--proxy-cacert`).
    public var certificate: String
    public var key: String
    /// The DNS suffix of the names it serves (spec/RELAYS.md §4.1).
    public var zone: String
    public var tokens: [PlaneToken] = []
    /// How long a CONNECT waits for the edge to connect the target before `504`.
    public var answerTimeout: TimeAmount = .seconds(15)

    public init(listen: Endpoint, certificate: String, key: String, zone: String) {
        self.listen = listen
        self.certificate = certificate
        self.key = key
        self.zone = zone
    }
}

/// Binds the front door and answers its CONNECTs (README "Front door").
enum FrontDoor {
    /// What every refusal of an agent says, whether it is unknown, offline or another tenant's:
    /// a token learns nothing about agents it may not reach.
    static let noSuchAgent = HubRelay.OpenFailure.agentNotConnected.httpAnswer(about: "target").message + "\n"

    /// `tether_front_door_connects_total{status}`: every CONNECT by the status it was answered
    /// with — `200` spliced, each refusal by its own (README "Admin endpoints").
    static func count(_ status: HTTPResponseStatus) {
        Counter(label: "tether_front_door_connects_total", dimensions: [("status", "\(status.code)")]).increment()
    }

    /// Binds `configuration.listen`. Each CONNECT is judged by the configuration `current` returns
    /// then — tokens, zone and timeout change with a reload; the TLS files are read again when they
    /// changed, for each new connection.
    static func bind(
        _ configuration: FrontDoorConfiguration, current: @escaping @Sendable () -> FrontDoorConfiguration?, hub: HubRelay,
        group: any EventLoopGroup, access: Logger
    ) async throws -> any Channel {
        let tls = try TLSContextStore(
            configuration: .publicServer(certificateChainFile: configuration.certificate, privateKeyFile: configuration.key))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    _ = try tls.reloadIfChanged()
                    let handler = FrontDoorHandler(current: current, hub: hub, access: access)
                    try channel.pipeline.syncOperations.addHandler(
                        try TLSHandler(context: tls.current, eventLoop: channel.eventLoop))
                    try channel.pipeline.syncOperations.addHandler(handler.decoder)
                    try channel.pipeline.syncOperations.addHandler(handler.encoder)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        return try await EndpointSockets.bind(bootstrap, to: configuration.listen)
    }
}

/// One client connection: its CONNECT, the answer, then the splice.
final class FrontDoorHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
    let encoder = HTTPResponseEncoder()
    private let current: @Sendable () -> FrontDoorConfiguration?
    private let hub: HubRelay
    private let access: Logger
    private var asked = false
    private var closed = false
    private let started = NIODeadline.now()

    init(current: @escaping @Sendable () -> FrontDoorConfiguration?, hub: HubRelay, access: Logger) {
        self.current = current
        self.hub = hub
        self.access = access
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = self.unwrapInboundIn(data), !self.asked else { return }
        self.asked = true
        var record: Logger.Metadata = ["method": "\(head.method.rawValue)", "authority": "\(head.uri)"]
        guard let configuration = self.current() else {
            return self.answer(context, .serviceUnavailable, "the front door is closing\n", record)
        }
        guard head.method == .CONNECT else {
            return self.answer(context, .methodNotAllowed, "this is an HTTP CONNECT proxy: only CONNECT is served\n", record)
        }
        let secret = head.headers.first(name: "proxy-authorization").flatMap { TokenMatch.secret(inAuthorization: $0) }
        guard let secret, let token = TokenMatch.first(secret, in: configuration.tokens, digest: \.sha256) else {
            var headers = HTTPHeaders()
            headers.add(name: "Proxy-Authenticate", value: "Bearer realm=\"tether\"")
            headers.add(name: "Proxy-Authenticate", value: "Basic realm=\"tether\"")
            return self.answer(
                context, .proxyAuthenticationRequired,
                "a token is required: Proxy-Authorization: Bearer <token>, or Basic with the token as the password\n",
                record, headers: headers)
        }
        record["token"] = "\(token.id)"
        record["tenant"] = "\(token.tenant)"
        let authority: FrontDoorAuthority
        do {
            authority = try FrontDoorAuthority.parse(head.uri, zone: configuration.zone)
        } catch {
            return self.answer(context, .badRequest, "\(error)\n", record)
        }
        record["agent"] = "\(authority.agent)"
        record["target"] = "\(authority.target)"
        // Another tenant's agent is answered as one that does not exist, and is never asked.
        guard authority.agent.tenant == token.tenant else {
            return self.answer(context, .notFound, FrontDoor.noSuchAgent, record, result: "refused: another tenant")
        }
        let hub = self.hub
        let timeout = configuration.answerTimeout
        let opening = context.eventLoop.makeFutureWithTask { () async throws -> TetherStreamHandle in
            try await hub.openStream(to: authority.agent, target: authority.target, user: token.user, within: timeout)
        }
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        opening.assumeIsolated().whenComplete { result in
            let context = boundContext.value
            switch result {
            case .success(let stream):
                guard !self.closed else { return stream.eventLoop.execute { stream.reset(.cancel) } }
                self.splice(context, stream, record)
            case .failure(let error as HubRelay.OpenFailure):
                let (status, body) = Self.status(of: error)
                self.answer(context, status, body, record, result: "refused: \(error)")
            case .failure(let error):
                self.answer(context, .badGateway, "the stream could not be opened\n", record, result: "refused: \(error)")
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed = true
        context.fireChannelInactive()
    }

    /// Why a CONNECT that reached an agent got no stream, as HTTP says it.
    static func status(of failure: HubRelay.OpenFailure) -> (HTTPResponseStatus, String) {
        let (code, message) = failure.httpAnswer(about: "target")
        return (HTTPResponseStatus(statusCode: code), message + "\n")
    }

    /// `200`, then the socket is the stream's: the HTTP handlers leave, octets the client sent after
    /// its CONNECT go to the stream first.
    private func splice(_ context: ChannelHandlerContext, _ stream: TetherStreamHandle, _ record: Logger.Metadata) {
        let channel = context.channel
        let started = self.started
        let access = self.access
        // Written as octets: NIO's encoder would frame a response without a length as chunked, and
        // a 2xx to CONNECT has no body at all (RFC 9110 §9.3.6).
        channel.pipeline.syncOperations.removeHandler(self.encoder, promise: nil)
        context.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")), promise: nil)
        FrontDoor.count(.ok)
        channel.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        StreamSplicer.splice(channel, with: stream).whenComplete { result in
            var record = record
            record["stream"] = "\(stream.id.rawValue)"
            record["duration-ms"] = "\((NIODeadline.now() - started).nanoseconds / 1_000_000)"
            switch result {
            case .success(let outcome):
                record["octets-to-agent"] = "\(outcome.toStream)"
                record["octets-from-agent"] = "\(outcome.toSocket)"
                record["result"] = "\(outcome.error.map { "cut: \($0)" } ?? "ok")"
            case .failure(let error):
                record["result"] = "cut: \(error)"
            }
            record["status"] = "200"
            access.info("front door stream ended", metadata: record)
        }
        channel.pipeline.syncOperations.removeHandler(self.decoder, promise: nil)
    }

    /// An answer that ends the connection.
    private func answer(
        _ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String, _ record: Logger.Metadata,
        headers extra: HTTPHeaders = HTTPHeaders(), result: String? = nil
    ) {
        var record = record
        record["status"] = "\(status.code)"
        record["result"] = "\(result ?? "refused: \(status.reasonPhrase)")"
        record["duration-ms"] = "\((NIODeadline.now() - self.started).nanoseconds / 1_000_000)"
        self.access.notice("front door refused a CONNECT", metadata: record)
        FrontDoor.count(status)
        guard !self.closed else { return }
        var headers = extra
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
