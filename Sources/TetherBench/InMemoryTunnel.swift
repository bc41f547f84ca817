import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Tether
import TetherRelay
import TetherTLS

/// A dialer and an acceptor, each an `EmbeddedChannel` set up the way a socket is (TLS by
/// `TetherTransport.configure`, or our TLS handler alone), with the octets carried between them by
/// hand on the calling thread: the whole user-space data path with no kernel, no second thread and
/// no scheduling, so its cost per MiB is steady on a shared machine. `tether bench --only memory`
/// and the package-benchmark suite `Tunnel` (allocations per MiB, with thresholds) run it.
public struct InMemoryTunnel {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    private let received: NIOLockedValueBox<Int>
    private let handle: TetherStreamHandle?

    /// The chunk each write carries.
    public static let chunk = ByteBuffer(repeating: 0x5A, count: 65_536)

    /// Mutual TLS 1.3 with `certificates`, then Tether (`tunnel` true) or nothing above TLS; ready
    /// to move octets when it returns.
    public init(certificates: ThrowAwayCertificates, tunnel: Bool) throws {
        let received = NIOLockedValueBox(0)
        self.received = received
        let serverTLS = try TLSContext(configuration: certificates.hub)
        let clientTLS = try TLSContext(configuration: certificates.edge)
        guard tunnel else {
            try self.server.pipeline.syncOperations.addHandler(try TLSHandler(context: serverTLS, eventLoop: self.server.eventLoop))
            try self.server.pipeline.syncOperations.addHandler(Counter(received))
            try self.client.pipeline.syncOperations.addHandler(try TLSHandler(context: clientTLS, eventLoop: self.client.eventLoop))
            self.handle = nil
            try Self.connect(self.client, self.server)
            return
        }
        let accepted = TetherTransport.configure(
            channel: self.server, tls: serverTLS, configuration: .init(role: .acceptor),
            inboundStreamHandler: { handle in
                handle.onReadable = {
                    var taken = 0
                    while let read = handle.read() {
                        received.withLockedValue { $0 += read.bytes.readableBytes }
                        taken += read.wireOctets
                    }
                    handle.consumed(taken)
                }
            }, readFirst: false)
        let dialed = TetherTransport.configure(
            channel: self.client, tls: clientTLS, configuration: .init(role: .dialer), readFirst: false)
        try Self.connect(self.client, self.server)
        _ = try accepted.wait()
        let opened = try dialed.wait().openStreamHandle(service: "sink", class: .bulk)
        try Self.settle(self.client, self.server)  // runs the open, which was submitted to the loop
        self.handle = try opened.wait()
    }

    /// Writes in flight at once: a writer ahead of its reader, as on a socket, within the stream's
    /// initial window.
    static let writesAhead = 4

    /// Moves `octets` (a multiple of ``chunk``'s size) from the dialer to the acceptor.
    public func move(_ octets: Int) throws {
        let target = self.received.withLockedValue { $0 } + octets
        var writes: [EventLoopFuture<Void>] = []
        for index in 0..<(octets / Self.chunk.readableBytes) {
            if let handle = self.handle {
                writes.append(handle.write(Self.chunk))
            } else {
                self.client.writeAndFlush(Self.chunk, promise: nil)
            }
            if index % Self.writesAhead == Self.writesAhead - 1 {
                try self.settle()
                for write in writes { try write.wait() }
                writes.removeAll(keepingCapacity: true)
            }
        }
        try self.settle()
        for write in writes { try write.wait() }
        guard self.received.withLockedValue({ $0 }) == target else {
            throw InMemoryTunnelError(description: "the acceptor received \(self.received.withLockedValue { $0 }), expected \(target)")
        }
    }

    private static func connect(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 443)
        try server.connect(to: address).wait()
        try client.connect(to: address).wait()
        try Self.settle(client, server)
    }

    private func settle() throws { try Self.settle(self.client, self.server) }

    /// Runs both loops' tasks and carries every octet written, until nothing moves.
    private static func settle(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws {
        var moved = true
        while moved {
            moved = false
            client.embeddedEventLoop.run()
            server.embeddedEventLoop.run()
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                try server.writeInbound(bytes)
                moved = true
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                try client.writeInbound(bytes)
                moved = true
            }
        }
    }

    /// Counts plaintext that reaches the top of the TLS-only acceptor.
    private final class Counter: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<Int>

        init(_ received: NIOLockedValueBox<Int>) { self.received = received }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let count = self.unwrapInboundIn(data).readableBytes
            self.received.withLockedValue { $0 += count }
        }
    }
}

struct InMemoryTunnelError: Error, CustomStringConvertible {
    var description: String
}
