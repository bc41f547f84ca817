import NIOCore
import NIOPosix
import TetherTLS

/// The baselines of `tether bench`: the same bytes over one TCP connection, plain or through our
/// TLS handler, no Tether.
///
/// The pusher sends an 8-octet length and then that many octets in 64 KiB writes, as fast as the
/// connection takes them; the sink answers one octet once it has read them all.
enum RawTCP {
    static func listen(group: any EventLoopGroup, tls: TLSContextStore?, port: Int = 0) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls.current, eventLoop: channel.eventLoop))
                    }
                    try channel.pipeline.syncOperations.addHandler(Sink())
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
    }

    /// Pushes `octets` to a sink; succeeds with the seconds from the first write to the answer.
    static func push(
        group: any EventLoopGroup, to address: SocketAddress, octets: Int, chunk: ByteBuffer, tls: TLSContext?
    ) async throws -> Double {
        let handshake = group.any().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let tls else { return handshake.succeed() }
                    let handler = try TLSHandler(context: tls, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    handler.handshakeCompleted.map { _ in () }.cascade(to: handshake)
                }
            }
            .connect(to: address).get()
        // The clock starts after the handshake: this row measures the record layer.
        try await handshake.futureResult.get()
        let result = try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Double> in
            let pusher = Pusher(octets: octets, chunk: chunk, promise: channel.eventLoop.makePromise())
            do {
                try channel.pipeline.syncOperations.addHandler(pusher)
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
            return pusher.promise.futureResult
        }.get()
        try? await channel.close()  // the peer may already have hung up after acknowledging
        return result
    }

    private final class Sink: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var expected: Int?
        private var header = ByteBuffer()
        private var received = 0

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = self.unwrapInboundIn(data)
            if self.expected == nil {
                let need = 8 - self.header.readableBytes
                var part = bytes.readSlice(length: min(need, bytes.readableBytes))!
                self.header.writeBuffer(&part)
                if self.header.readableBytes == 8 {
                    // A length this process could not hold is not from our pusher: hang up.
                    guard let length = self.header.readInteger(as: UInt64.self), length < 1 << 48 else {
                        context.close(promise: nil)
                        return
                    }
                    self.expected = Int(length)
                }
            }
            self.received += bytes.readableBytes
            if let expected = self.expected, self.received >= expected {
                self.received = 0
                self.expected = nil
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: [1])), promise: nil)
            }
        }
    }

    private final class Pusher: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let octets: Int
        let chunk: ByteBuffer
        let promise: EventLoopPromise<Double>
        private var written = 0
        private var started = NIODeadline.now()

        init(octets: Int, chunk: ByteBuffer, promise: EventLoopPromise<Double>) {
            self.octets = octets
            self.chunk = chunk
            self.promise = promise
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.started = .now()
            var header = ByteBuffer()
            header.writeInteger(UInt64(self.octets))
            context.write(self.wrapOutboundOut(header), promise: nil)
            self.pump(context: context)
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            self.pump(context: context)
        }

        /// Counts a chunk before writing it: a write can change the channel's writability, and the
        /// writability change calls back into this method, which must not send the same share again
        /// (it did: one chunk too many now and then, and the sink hung up on the stray octets).
        private func pump(context: ChannelHandlerContext) {
            while context.channel.isWritable && self.written < self.octets {
                let length = min(self.chunk.readableBytes, self.octets - self.written)
                self.written += length
                context.write(self.wrapOutboundOut(self.chunk.getSlice(at: self.chunk.readerIndex, length: length)!), promise: nil)
            }
            context.flush()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.promise.succeed(Double((NIODeadline.now() - self.started).nanoseconds) / 1e9)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.promise.fail(ChannelError.ioOnClosedChannel)
        }
    }
}
