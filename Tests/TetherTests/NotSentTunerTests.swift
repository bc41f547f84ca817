#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
@testable import TetherRelay
import Testing

/// spec §8.2 rule 4: the kernel holds about 250 µs of sending, at the rate the connection delivers.
@Suite struct NotSentTunerTests {
    @Test func theLimitIsTheRateTimesTheTimeWithinTheRange() {
        let limit = NotSentLimit()
        #expect(limit.isAdaptive)
        #expect(limit.octets(rate: 0) == 16 << 10)
        #expect(limit.octets(rate: 62.5e6) == 16 << 10)  // 500 Mbit/s: 15,625 octets, raised to the floor
        #expect(limit.octets(rate: 125e6) == 31_250)  // 1 Gbit/s
        #expect(limit.octets(rate: 2e9) == 128 << 10)  // loopback: capped
        let fixed = NotSentLimit.fixed(65_536)
        #expect(!fixed.isAdaptive)
        #expect(fixed.octets(rate: 0) == 65_536 && fixed.octets(rate: 1e12) == 65_536)
    }

    /// On a real socket: while the peer stops reading, nothing is acknowledged and the kernel's
    /// limit falls to the floor, and NIO's watermarks with it; once the peer reads again they rise
    /// to the cap and to the configured watermarks. Read back from the socket and the channel, so
    /// what is checked is what the kernel and NIO enforce.
    @Test func theSocketsLimitFollowsWhatThePeerTakes() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (accepted, acceptedContinuation) = AsyncStream<any Channel>.makeStream()
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_rcvbuf), value: 65_536)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                acceptedContinuation.yield(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        // 100 ms of sending, 16–128 KiB: the cap needs only 1.3 MB/s, which loopback delivers
        // however loaded the machine is.
        let limit = NotSentLimit(time: .milliseconds(100), range: (16 << 10)...(128 << 10))
        let configured = ChannelOptions.Types.WriteBufferWaterMark(low: 16 << 10, high: 32 << 10)
        let sender = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NotSentTuner.install(limit, writeBufferWaterMark: configured, on: channel)
                }
            }
            .connect(to: listener.localAddress!).get()
        var iterator = accepted.makeAsyncIterator()
        let receiver = try #require(await iterator.next())
        let option = ChannelOptions.Types.SocketOption(
            level: NIOBSDSocket.OptionLevel.tcp, name: NIOBSDSocket.Option(rawValue: TCP_NOTSENT_LOWAT))

        /// Waits until the kernel's limit is `octets`, and returns NIO's watermarks (low, high) read
        /// in the same turn of the event loop — the tuner may move both again a moment later (a
        /// loaded machine's acknowledgements come in bursts), but never one without the other.
        func until(_ octets: SocketOptionValue) async throws -> [Int]? {
            try await BackpressureTests.waitUntil(eventLoop: sender.eventLoop) {
                guard let current = try? sender.syncOptions?.getOption(option), current == octets,
                    let marks = try? sender.syncOptions?.getOption(.writeBufferWaterMark)
                else { return nil }
                return [marks.low, marks.high]
            }
        }
        // Set before the connection was up: the cap, and the configured watermarks.
        #expect(try await until(128 << 10) == [16 << 10, 32 << 10])

        // 64 KiB every 5 ms while there is room, and a flush every tick: the tuner runs on flushes.
        let chunk = ByteBuffer(repeating: 1, count: 65_536)
        let ticks = sender.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(5)) { _ in
            if sender.isWritable { sender.write(chunk, promise: nil) }
            sender.flush()
        }
        #expect(try await until(16 << 10) == [8 << 10, 16 << 10])  // the receiver reads nothing
        try await receiver.setOption(.autoRead, value: true).get()
        receiver.read()
        #expect(try await until(128 << 10) == [16 << 10, 32 << 10])

        ticks.cancel()
        try? await sender.close()
        try? await receiver.close()
        try await listener.close()
        try await group.shutdownGracefully()
    }
}
