import NIOCore
import NIOPosix
import Tether
import TetherSession
import TetherWire

/// A dialer and an acceptor connected over real TCP on 127.0.0.1.
struct Loopback {
    let group: MultiThreadedEventLoopGroup
    let dialer: TetherConnection
    let acceptor: TetherConnection
    let listener: any Channel

    static func start(
        dialer dialerConfiguration: TetherConnectionHandler.Configuration = .init(role: .dialer),
        acceptor acceptorConfiguration: TetherConnectionHandler.Configuration = .init(role: .acceptor),
        group: MultiThreadedEventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    ) async throws -> Loopback {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TetherConnection.configure(channel: channel, configuration: acceptorConfiguration)
                }
            }
        let dialer = try await ClientBootstrap(group: group)
            .connect(to: server.channel.localAddress!) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TetherConnection.configure(channel: channel, configuration: dialerConfiguration)
                }
            }
        let acceptor = try await server.executeThenClose { inbound in
            var iterator = inbound.makeAsyncIterator()
            return try await iterator.next()!
        }
        _ = try await dialer.ready()
        _ = try await acceptor.ready()
        return Loopback(group: group, dialer: dialer, acceptor: acceptor, listener: server.channel)
    }

    func stop() async throws {
        await self.dialer.close()
        await self.acceptor.close()
        try await self.group.shutdownGracefully()
    }
}

/// FNV-1a, 64 bits: a checksum for test payloads.
struct Checksum {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ buffer: ByteBuffer) {
        self.value = buffer.withUnsafeReadableBytes { bytes in
            var value = self.value
            for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return value
        }
    }
}

/// Deterministic pseudo-random bytes.
func randomPayload(count: Int, seed: UInt64) -> ByteBuffer {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    var buffer = ByteBuffer()
    buffer.reserveCapacity(count)
    for _ in 0..<(count + 7) / 8 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        buffer.writeInteger(state)
    }
    buffer.moveWriterIndex(to: count)
    return buffer
}

extension ByteBuffer {
    var checksum: UInt64 {
        var sum = Checksum()
        sum.add(self)
        return sum.value
    }
}
