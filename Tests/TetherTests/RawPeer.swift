import NIOCore
import NIOPosix
import Tether
import TetherTLS
import TetherWire

/// A hand-driven peer on a raw TCP connection: it writes whatever frames a test chooses and
/// collects every frame the other side sends until the connection closes.
struct RawPeer {
    let channel: any Channel
    let received: AsyncStream<ByteBuffer>

    /// Connects over TCP, and over TLS first when `tls` is given (returning once the handshake is
    /// done, so what the test writes is Tether's, inside the encrypted connection).
    static func connect(to address: SocketAddress, group: any EventLoopGroup, tls: TLSContext? = nil) async throws -> RawPeer {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let handshake = group.any().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let handler = try TLSHandler(context: tls, eventLoop: channel.eventLoop)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        handler.handshakeCompleted.map { _ in }.cascade(to: handshake)
                    } else {
                        handshake.succeed()
                    }
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation))
                }
            }
            .connect(to: address).get()
        try await handshake.futureResult.get()
        return RawPeer(channel: channel, received: stream)
    }

    /// Writes octets as they are; a closed connection is not an error (the peer may cut us off
    /// halfway through).
    func sendRaw(_ bytes: ByteBuffer) async {
        try? await self.channel.writeAndFlush(bytes)
    }

    /// The GOAWAY the other side sent before closing, if it sent one.
    func goAwayUntilClosed() async -> GoAwayFrame? {
        let frames = (try? await self.framesUntilClosed()) ?? []
        for frame in frames.reversed() {
            if case .goAway(let goAway) = frame { return goAway }
        }
        return nil
    }

    /// Writes frames (after a preface, when `settings` are given). Like ``sendRaw(_:)``, a
    /// connection the other side closes halfway through is not an error: tests send frames that
    /// make it do exactly that, and read its answer with ``framesUntilClosed()``.
    func send(_ frames: [Frame], preface settings: Settings? = nil) async {
        var bytes = ByteBuffer()
        if let settings { bytes.writePreface(settings) }
        for frame in frames { bytes.writeFrame(frame) }
        await self.sendRaw(bytes)
    }

    /// Everything the other side sent until it closed, decoded (the preface's magic first).
    func framesUntilClosed() async throws -> [Frame] {
        var decoder = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF), expectsPreface: true)
        var frames: [Frame] = []
        for await chunk in self.received {
            decoder.append(chunk)
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        return frames
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let continuation: AsyncStream<ByteBuffer>.Continuation

        init(continuation: AsyncStream<ByteBuffer>.Continuation) {
            self.continuation = continuation
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.continuation.yield(self.unwrapInboundIn(data))
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.continuation.finish()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// A listener whose connections run Tether as the acceptor; hands them out as they arrive.
struct TetherListener {
    let address: SocketAddress
    let connections: AsyncStream<TetherConnection>
    let channel: any Channel

    static func start(
        group: any EventLoopGroup, configuration: TetherConnectionHandler.Configuration = .init(role: .acceptor)
    ) async throws -> TetherListener {
        let (stream, continuation) = AsyncStream<TetherConnection>.makeStream()
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    continuation.yield(try TetherConnection.configure(channel: channel, configuration: configuration))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TetherListener(address: channel.localAddress!, connections: stream, channel: channel)
    }
}
