import NIOCore
import NIOPosix
import TetherTLS

/// Our TLS server on 127.0.0.1: each connection's handshake outcome is reported, and every error
/// that reaches the top of a connection's pipeline; after the handshake it echoes plaintext.
struct EchoServer {
    let channel: any Channel
    let handshakes: AsyncStream<Result<TLSPeer, any Error>>
    let errors: AsyncStream<any Error>
    var port: Int { self.channel.localAddress!.port! }

    static func start(group: any EventLoopGroup, store: TLSContextStore) async throws -> EchoServer {
        let (stream, continuation) = AsyncStream<Result<TLSPeer, any Error>>.makeStream()
        let (errors, errorContinuation) = AsyncStream<any Error>.makeStream()
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try TLSHandler(context: store.current, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(Echo(errors: errorContinuation))
                    tls.handshakeCompleted.whenComplete { continuation.yield($0) }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return EchoServer(channel: channel, handshakes: stream, errors: errors)
    }

    /// The next error a connection reported.
    func nextError() async -> (any Error)? {
        var iterator = self.errors.makeAsyncIterator()
        return await iterator.next()
    }

    func nextHandshake() async -> Result<TLSPeer, any Error>? {
        var iterator = self.handshakes.makeAsyncIterator()
        return await iterator.next()
    }
}

final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let errors: AsyncStream<any Error>.Continuation

    init(errors: AsyncStream<any Error>.Continuation) {
        self.errors = errors
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.errors.yield(error)
        context.close(promise: nil)
    }
}

/// Collects what arrives above our TLS client.
final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private(set) var received = ByteBuffer()
    private(set) var errors: [any Error] = []
    let closed: EventLoopPromise<Void>

    init(eventLoop: any EventLoop) {
        self.closed = eventLoop.makePromise()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        self.received.writeBuffer(&bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.errors.append(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed.succeed()
    }
}

/// Our TLS client: connects, and reports the handshake outcome.
struct TLSClient: Sendable {
    let channel: any Channel
    let handshake: EventLoopFuture<TLSPeer>
    let collector: Collector

    static func connect(group: any EventLoopGroup, port: Int, configuration: TLSConfiguration) async throws -> TLSClient {
        let context = try TLSContext(configuration: configuration)
        // Taken while the handlers are added: a failed handshake may remove them before connect returns.
        let parts = group.any().makePromise(of: (EventLoopFuture<TLSPeer>, Collector).self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try TLSHandler(context: context, eventLoop: channel.eventLoop)
                    let collector = Collector(eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(collector)
                    parts.succeed((tls.handshakeCompleted, collector))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let (handshake, collector) = try await parts.futureResult.get()
        return TLSClient(channel: channel, handshake: handshake, collector: collector)
    }

    /// Waits until `count` octets arrived (or the connection closed) and returns them.
    func read(_ count: Int) async throws -> ByteBuffer {
        for _ in 0..<3_000 {
            let (received, closed) = try await self.channel.eventLoop.submit {
                (self.collector.received, !self.channel.isActive)
            }.get()
            if received.readableBytes >= count || closed { return received }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try await self.channel.eventLoop.submit { self.collector.received }.get()
    }
}

extension Result where Failure == any Error {
    /// The ``TLSError/Code`` of a failure, for assertions.
    var tlsCode: TLSError.Code? {
        if case .failure(let error) = self { return (error as? TLSError)?.code }
        return nil
    }
}
