import NIOCore
import NIOPosix

/// A userspace WAN between two loopback endpoints, for `tether bench --link-rtt --link-rate`
/// (this kernel has no netem): a TCP proxy that, in each direction, serialises bytes at the link
/// rate and delivers them half an RTT later. Beyond its buffer the proxy stops reading, so the
/// sender's TCP backs off. The tests use it too, for paths with a real round trip on loopback.
///
/// The model per direction is a FIFO link: a chunk arriving at `t` starts transmitting when the
/// previous one finished (or at `t`), takes `size / rate`, and arrives `rtt / 2` after that.
public struct LinkProfile: Sendable {
    public var rtt: TimeAmount
    /// Octets per second.
    public var rate: Double
    /// Octets in flight plus queued, per direction.
    public var buffer: Int
    /// When set, a router's buffer instead: at most this many octets wait to be transmitted,
    /// whatever is in flight (the link-bound latency row). Counted against `buffer` instead, a
    /// queue grows by whatever the flight lacks — after the sender paused, for a whole half RTT.
    public var queueLimit: Int?
    /// When set, the link's own sockets receive at most this much (the kernel then holds at most
    /// twice it: it doubles `SO_RCVBUF` for its bookkeeping) and read 16 KiB at a time; otherwise
    /// the kernel's defaults.
    public var receiveBuffer: Int?

    public init(rtt: TimeAmount, bitsPerSecond: Double) {
        self.rtt = rtt
        self.rate = bitsPerSecond / 8
        // At least the bandwidth-delay product, twice over, and never less than 1 MiB.
        self.buffer = max(1 << 20, Int(2 * self.rate * Double(rtt.nanoseconds) / 1e9))
    }
}

public enum DelayLine {
    /// Listens on 127.0.0.1 (any port); each accepted connection is joined to a new connection to
    /// 127.0.0.1:`port` through the link.
    public static func start(group: any EventLoopGroup, port: Int, link: LinkProfile) async throws -> any Channel {
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let receive = link.receiveBuffer
        let reads: UInt = receive == nil ? 4 : 1
        let allocator = AdaptiveRecvByteBufferAllocator(minimum: 4_096, initial: 16_384, maximum: receive == nil ? 65_536 : 16_384)
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: reads)
            .childChannelOption(.recvAllocator, value: allocator)
        if let receive {  // accepted sockets inherit it from the listener
            bootstrap = bootstrap.serverChannelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receive))
        }
        return try await bootstrap
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelOption(.maxMessagesPerRead, value: reads)
                    .channelOption(.recvAllocator, value: allocator)
                    .channelInitializer { channel in
                        guard let receive else { return channel.eventLoop.makeSucceededVoidFuture() }
                        return channel.setOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receive))
                    }
                    .connect(to: target)
                    .flatMapThrowing { outbound in
                        let up = Direction(link: link)
                        let down = Direction(link: link)
                        try inbound.pipeline.syncOperations.addHandler(Pipe(sending: up, receiving: down, peer: outbound))
                        try outbound.pipeline.syncOperations.addHandler(Pipe(sending: down, receiving: up, peer: inbound))
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// One direction of the link: its queue and clock.
    final class Direction {
        let link: LinkProfile
        /// Chunks in flight, with the time each arrives at the far end.
        var inFlight = CircularBuffer<(due: NIODeadline, bytes: ByteBuffer)>()
        var queued = 0
        /// When the link finishes transmitting what it has.
        var busyUntil = NIODeadline.uptimeNanoseconds(0)
        var timer: Scheduled<Void>?
        /// The channel that reads into this direction, paused while the queue is full.
        weak var source: (any Channel)?
        var sourcePaused = false

        init(link: LinkProfile) {
            self.link = link
        }

        /// Whether the link takes more now: its queue (or, without a queue limit, its buffer) has room.
        func hasRoom(now: NIODeadline) -> Bool {
            guard let limit = self.link.queueLimit else { return self.queued < self.link.buffer }
            return now > self.roomAt(limit)
        }

        /// When the octets waiting to be transmitted fall to `limit`.
        func roomAt(_ limit: Int) -> NIODeadline {
            self.busyUntil - .nanoseconds(Int64(Double(limit) / self.link.rate * 1e9))
        }

        func enqueue(_ bytes: ByteBuffer, now: NIODeadline) {
            let start = max(now, self.busyUntil)
            self.busyUntil = start + .nanoseconds(Int64(Double(bytes.readableBytes) / self.link.rate * 1e9))
            self.inFlight.append((self.busyUntil + .nanoseconds(self.link.rtt.nanoseconds / 2), bytes))
            self.queued += bytes.readableBytes
        }
    }

    /// Reads from one end into a direction and delivers the other direction to it.
    final class Pipe: ChannelDuplexHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let sending: Direction
        let receiving: Direction
        let peer: any Channel

        init(sending: Direction, receiving: Direction, peer: any Channel) {
            self.sending = sending
            self.receiving = receiving
            self.peer = peer
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.sending.source = context.channel
            if context.channel.isActive { context.read() }
        }

        func channelActive(context: ChannelHandlerContext) {
            context.read()
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.sending.enqueue(self.unwrapInboundIn(data), now: .now())
            self.schedule(self.sending, to: self.peer)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            // Keep reading only while the link has room.
            let now = NIODeadline.now()
            if self.sending.hasRoom(now: now) {
                context.read()
                return
            }
            self.sending.sourcePaused = true
            if let limit = self.sending.link.queueLimit {
                // Room comes as the queue is transmitted, not as chunks arrive.
                let direction = self.sending
                context.eventLoop.assumeIsolated().scheduleTask(deadline: direction.roomAt(limit)) {
                    direction.sourcePaused = false
                    direction.source?.read()
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.peer.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        /// Delivers what is due on `direction` to `destination`, then waits for the next chunk.
        private func schedule(_ direction: Direction, to destination: any Channel) {
            guard direction.timer == nil, let next = direction.inFlight.first else { return }
            let eventLoop = destination.eventLoop
            direction.timer = eventLoop.assumeIsolated().scheduleTask(deadline: next.due) {
                direction.timer = nil
                let now = NIODeadline.now()
                var delivered = false
                while let first = direction.inFlight.first, first.due <= now {
                    direction.inFlight.removeFirst()
                    direction.queued -= first.bytes.readableBytes
                    destination.write(first.bytes, promise: nil)
                    delivered = true
                }
                if delivered { destination.flush() }
                if direction.sourcePaused && direction.link.queueLimit == nil && direction.hasRoom(now: now) {
                    direction.sourcePaused = false
                    direction.source?.read()
                }
                self.schedule(direction, to: destination)
            }
        }
    }
}
