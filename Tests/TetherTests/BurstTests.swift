import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
@testable import TetherRelay
import Testing

/// spec §8.2 rule 5: while input waits unread, a sender stops after one writing pass (at most
/// what fits under the high watermark) and reads before it writes on — on loopback, where the
/// kernel takes every write at once, it otherwise writes all its credit before reading.
@Suite struct BurstTests {
    /// The dialer's writes are counted per event-loop iteration (poll, I/O, tasks) while 4 bulk
    /// streams send 4 MiB each to a reader that keeps up. Its probe always says input is waiting,
    /// so that what is checked is the writer's answer to it, not when credit happens to arrive.
    @Test func aSenderWithInputWaitingReadsAfterEachPass() async throws {
        let writes = WritesPerIteration()
        let dialerGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1, metricsDelegate: writes)
        let acceptorGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (connections, accepted) = AsyncStream<TetherConnection>.makeStream()
        let listener = try await TetherTransport.listen(
            group: acceptorGroup, host: "127.0.0.1", port: 0, tls: nil, configuration: .init(role: .acceptor),
            onConnection: { accepted.yield($0) })
        let watermark = TetherTransport.QueueLimits().writeBufferWaterMark
        let configured = dialerGroup.any().makePromise(of: TetherConnection.self)
        _ = try await ClientBootstrap(group: dialerGroup)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: watermark)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(WriteCounter(writes))
                    // Input always waits unread: every pass stops after the high watermark.
                    var facts = TetherConnectionHandler.TransportFacts()
                    facts.unreadInput = { _ in true }
                    configured.succeed(
                        try TetherConnection.configure(channel: channel, configuration: .init(role: .dialer), facts: facts))
                }
            }
            .connect(to: listener.localAddress!).get()
        let dialer = try await configured.futureResult.get()
        var iterator = connections.makeAsyncIterator()
        let acceptor = try #require(await iterator.next())

        let streams = 4
        let octets = 4 << 20
        let server = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                var opened = 0
                for try await stream in acceptor.inboundStreams {
                    group.addTask {
                        var received = 0
                        for try await chunk in stream.chunks { received += chunk.readableBytes }
                        return received
                    }
                    opened += 1
                    if opened == streams { break }
                }
                return try await group.reduce(0, +)
            }
        }
        writes.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<streams {
                group.addTask {
                    let stream = try await dialer.openStream(service: "bulk", class: .bulk)
                    let chunk = randomPayload(count: 65_536, seed: UInt64(index))
                    for _ in 0..<(octets / 65_536) { try await stream.write(chunk) }
                    try await stream.finish()
                }
            }
            try await group.waitForAll()
        }
        #expect(try await server.value == streams * octets)
        let perIteration = writes.stop()

        // A pass ends once more than the high watermark is pending: at most one frame (16 KiB
        // and its header) beyond it, plus a few control frames. An iteration can hold two: one
        // when the socket reports (read, writable), one from a task (a stream write); the median
        // iteration is asserted. Without the probe's answer (`{ _ in false }`) passes follow each
        // other until the credit runs out: the median is then 650–800 KB.
        let twoPasses = 2 * (watermark.high + 16_384 + 1_024)
        let median = perIteration.sorted()[perIteration.count / 2]
        #expect(median <= twoPasses, "median: \(median) octets in an iteration, of \(perIteration.count)")

        await dialer.close()
        await acceptor.close()
        try await listener.close()
        try await dialerGroup.shutdownGracefully()
        try await acceptorGroup.shutdownGracefully()
    }
}

/// Octets written to the socket in each event-loop iteration that wrote any.
private final class WritesPerIteration: NIOEventLoopMetricsDelegate {
    private let state = NIOLockedValueBox((counting: false, current: 0, iterations: [Int]()))

    func start() { self.state.withLockedValue { $0.counting = true } }

    func stop() -> [Int] {
        self.state.withLockedValue { state in
            state.counting = false
            return state.iterations
        }
    }

    func add(_ octets: Int) { self.state.withLockedValue { $0.current += octets } }

    func processedTick(info: NIOEventLoopTickInfo) {
        self.state.withLockedValue { state in
            if state.counting && state.current > 0 { state.iterations.append(state.current) }
            state.current = 0
        }
    }
}

private final class WriteCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let writes: WritesPerIteration

    init(_ writes: WritesPerIteration) { self.writes = writes }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.writes.add(self.unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
}

/// The probe TetherTransport installs (spec §8.2 rule 5): TCP's received octets against those NIO
/// has read.
@Suite struct UnreadInputProbeTests {
    @Test func theProbeSeesOctetsTheKernelHoldsAndNotThoseRead() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (accepted, acceptedContinuation) = AsyncStream<any Channel>.makeStream()
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                acceptedContinuation.yield(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        // The probed side reads only when told to.
        let probed = try await ClientBootstrap(group: group)
            .channelOption(.autoRead, value: false)
            .connect(to: listener.localAddress!).get()
        let unreadInput = try #require(
            try await probed.eventLoop.submit { try UnreadInputProbe.add(to: probed) }.get())
        var iterator = accepted.makeAsyncIterator()
        let sender = try #require(await iterator.next())

        /// Asks the probe until it answers `expected` (the kernel and NIO act on their own time).
        func until(_ expected: Bool) async throws -> Bool {
            try await BackpressureTests.waitUntil(eventLoop: probed.eventLoop) {
                unreadInput(probed) == expected ? true : nil
            } != nil
        }

        #expect(try await probed.eventLoop.submit { unreadInput(probed) }.get() == false)
        try await sender.writeAndFlush(ByteBuffer(repeating: 7, count: 1_000))
        // The octets reach the kernel's queue: the probe says so, and keeps saying so, until NIO
        // reads them (nothing reads while autoRead is off).
        #expect(try await until(true))
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await probed.eventLoop.submit { unreadInput(probed) }.get() == true)
        probed.read()
        #expect(try await until(false))

        try? await sender.close()
        try? await probed.close()
        try await listener.close()
        try await group.shutdownGracefully()
    }
}
