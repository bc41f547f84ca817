import NIOCore
import NIOPosix
import TetherTLS
import TetherTestSupport
import Testing

/// spec §2.1, §8.2: how plaintext becomes records and records reach the socket.
@Suite struct TLSWritePathTests {
    static let fixtures = try! TLSFixtures()

    /// A full record's ciphertext is in the channel's write buffer as soon as the write that filled
    /// it returns, before any flush: the channel's writability counts it, so a writer that stops at
    /// the high watermark (the tunnel's writing passes) never has records hidden above the socket,
    /// where a command written next would wait behind them.
    @Test func aFullRecordReachesTheChannelWithoutAFlush() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: Self.fixtures.hub()))
        let client = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        _ = try await client.handshake.get()
        let buffered = try await client.channel.eventLoop.submit {
            var counts: [Int] = []
            for size in [TLSHandler.recordSize, TLSHandler.recordSize, 3 * TLSHandler.recordSize] {
                client.channel.write(ByteBuffer(repeating: 0x5A, count: size), promise: nil)
                counts.append(try client.channel.syncOptions!.getOption(.bufferedWritableBytes))
            }
            client.channel.flush()
            return counts
        }.get()
        // Each record adds its plaintext, a header and a tag (≥ 5 + 16 octets).
        #expect(buffered[0] >= TLSHandler.recordSize + 21, "\(buffered)")
        #expect(buffered[1] >= 2 * (TLSHandler.recordSize + 21), "\(buffered)")
        #expect(buffered[2] >= 5 * (TLSHandler.recordSize + 21), "\(buffered)")
        #expect(try await client.read(5 * TLSHandler.recordSize).readableBytes == 5 * TLSHandler.recordSize)
        try await client.channel.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// Writes of every size — a sliver, a record and one octet, many records and a tail, small
    /// writes packed together — come back intact through an echo, in order.
    @Test func writesOfEverySizeArriveIntact() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: Self.fixtures.hub()))
        let client = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        _ = try await client.handshake.get()
        var expected = ByteBuffer()
        var seed: UInt8 = 1
        for size in [7, TLSHandler.recordSize + 1, 1 << 20, 5 * TLSHandler.recordSize - 3, 100, 200, 16_000, 65_536] {
            var piece = ByteBuffer()
            for _ in 0..<size {
                seed = seed &* 31 &+ 7
                piece.writeInteger(seed)
            }
            expected.writeImmutableBuffer(piece)
            try await client.channel.writeAndFlush(piece)
        }
        let received = try await client.read(expected.readableBytes)
        #expect(received == expected)
        try await client.channel.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }
}
