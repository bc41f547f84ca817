import NIOConcurrencyHelpers
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
    /// Every error that reached the top of the pipeline, for a test's failure message.
    let errors: NIOLockedValueBox<[String]>

    /// Connects over TCP, and over TLS first when `tls` is given (returning once the handshake is
    /// done, so what the test writes is Tether's, inside the encrypted connection).
    ///
    /// `first` is written, and with `reading` false reading stops, the moment the handshake is
    /// done — on the event loop, not when this test's task next runs: on a loaded machine that
    /// can be seconds later, and the peer's timers would meet a connection that said nothing.
    static func connect(
        to address: SocketAddress, group: any EventLoopGroup, tls: TLSContext? = nil, first: ByteBuffer? = nil,
        reading: Bool = true
    ) async throws -> RawPeer {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let errors = NIOLockedValueBox<[String]>([])
        let handshake = group.any().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Runs on the event loop as the handshake completes, before anything is read.
                    let connected: @Sendable () -> Void = {
                        if !reading { try? channel.syncOptions?.setOption(.autoRead, value: false) }
                        if let first { channel.writeAndFlush(first, promise: nil) }
                        handshake.succeed()
                    }
                    if let tls {
                        let handler = try TLSHandler(context: tls, eventLoop: channel.eventLoop)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        handler.handshakeCompleted.whenComplete { result in
                            switch result {
                            case .success: connected()
                            case .failure(let error): handshake.fail(error)
                            }
                        }
                    } else {
                        connected()
                    }
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation, errors: errors))
                }
            }
            .connect(to: address).get()
        try await handshake.futureResult.get()
        return RawPeer(channel: channel, received: stream, errors: errors)
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
        let errors: NIOLockedValueBox<[String]>

        init(continuation: AsyncStream<ByteBuffer>.Continuation, errors: NIOLockedValueBox<[String]>) {
            self.continuation = continuation
            self.errors = errors
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.continuation.yield(self.unwrapInboundIn(data))
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.continuation.finish()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.errors.withLockedValue { $0.append("\(error)") }
            context.close(promise: nil)
        }
    }
}

/// A listener whose connections run Tether as the acceptor; hands them out as they arrive.
struct TetherListener {
    static let patient: TetherConnectionHandler.Configuration = {
        var configuration = TetherConnectionHandler.Configuration(role: .acceptor)
        configuration.session.abuseLimits.prefaceTimeout = .seconds(300)
        return configuration
    }()

    let address: SocketAddress
    let connections: AsyncStream<TetherConnection>
    let channel: any Channel

    /// By default the preface timeout is minutes, not the product's 10 s: on a loaded machine a
    /// test's task can run seconds after its connection is up, and the test is about what the peer
    /// then sends, not about the preface timeout.
    static func start(
        group: any EventLoopGroup, configuration: TetherConnectionHandler.Configuration = Self.patient
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
