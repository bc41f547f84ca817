import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Tether
import TetherRelay
import TetherTLS
import TetherWire
import Testing

/// The listener and the dialer as swift-service-lifecycle services (spec §10.2): graceful shutdown
/// quiesces, sends GOAWAY, lets open streams finish and returns; connections are reported up and
/// down; an admission check refuses before any stream (spec §10.3).
@Suite struct ServiceTests {
    static let logger = Logger(label: "tether.test")

    static func serviceGroup(_ services: [any Service]) -> ServiceGroup {
        ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], logger: Self.logger))
    }

    /// Graceful shutdown with a transfer under way: the stream finishes whole, a new open is
    /// refused (the peer's GOAWAY), the connection closes, and `run()` returns.
    @Test func aGracefulShutdownLetsOpenStreamsFinish() async throws {
        let events = NIOLockedValueBox<[String]>([])
        let listener = TetherListenerService(
            configuration: .init(host: "127.0.0.1", port: 0), tls: nil,
            onConnectionUp: { _ in events.withLockedValue { $0.append("up") } },
            onConnectionDown: { _, code in events.withLockedValue { $0.append("down \(code?.name ?? "none")") } })
        let services = Self.serviceGroup([listener])
        let running = Task { try await services.run() }
        let address = try await listener.localAddress
        let server = Task {
            try await waitFor { listener.connections.first }
        }
        let dialer = try await TetherTransport.dial(
            group: MultiThreadedEventLoopGroup.singleton, to: address, tls: nil, configuration: .init(role: .dialer))
        let acceptor = try await server.value
        let serving = Task { try await StreamTransferTests.serveChecksums(acceptor) }

        // A stream half-written when the shutdown begins.
        let stream = try await dialer.openStream(service: "echo", class: .bulk)
        let first = randomPayload(count: 1 << 20, seed: 1)
        try await stream.write(first)
        await services.triggerGracefulShutdown()
        let goAway = try await dialer.goAwayReceived()
        #expect(goAway.code == .noError)
        let refused = await #expect(throws: TetherError.self) {
            _ = try await dialer.openStream(service: "echo", class: .bulk)
        }
        #expect(refused?.openError == .draining)
        // It finishes whole.
        let second = randomPayload(count: 1 << 20, seed: 2)
        try await stream.write(second)
        try await stream.finish()
        var answers = try await Face.async.messages(stream)
        let (sum, length) = answers[0].readMultipleIntegers(as: (UInt64, UInt64).self)!
        var whole = first
        whole.writeImmutableBuffer(second)
        #expect(length == UInt64(whole.readableBytes))
        #expect(sum == whole.checksum)
        try await running.value  // run() returned once the connection had drained
        _ = await dialer.closed()
        // A drain that finished closes the transport without an error code.
        #expect(try await waitFor { events.withLockedValue { $0.count == 2 ? $0 : nil } } == ["up", "down none"])
        serving.cancel()
    }

    /// spec §10.3: an identity the admission check refuses gets the acceptor's preface, then GOAWAY
    /// REFUSED with the reason, and no stream; a connection it admits works.
    @Test func anAdmissionCheckRefusesBeforeAnyStream() async throws {
        let fixtures = Loopback.fixtures
        let store = try TLSContextStore(configuration: fixtures.hub())
        let listener = TetherListenerService(
            configuration: .init(host: "127.0.0.1", port: 0), tls: store,
            admission: { peer, _ in peer.identity == fixtures.identity ? .refuse("identity revoked") : .admit })
        let services = Self.serviceGroup([listener])
        let running = Task { try await services.run() }
        let address = try await listener.localAddress
        let peer = try await RawPeer.connect(
            to: address, group: MultiThreadedEventLoopGroup.singleton, tls: try TLSContext(configuration: fixtures.edge()),
            first: { var hello = ByteBuffer(); hello.writePreface(Settings()); return hello }())
        let frames = try await peer.framesUntilClosed()
        guard case .goAway(let goAway)? = frames.last else {
            Issue.record("expected GOAWAY last, got \(frames)")
            return
        }
        #expect(goAway.code == .refused)
        #expect(goAway.debug == "identity revoked")
        #expect(goAway.lastStreamID == .connection)
        #expect(listener.connections.isEmpty)
        await services.triggerGracefulShutdown()
        try await running.value
    }

    /// The dialer keeps its connection: dropped by the acceptor, it dials again (backoff reset).
    @Test func theDialerDialsAgainAfterItsConnectionDrops() async throws {
        let listener = TetherListenerService(configuration: .init(host: "127.0.0.1", port: 0), tls: nil)
        let listening = Self.serviceGroup([listener])
        let serving = Task { try await listening.run() }
        let address = try await listener.localAddress
        var configuration = TetherDialerService.Configuration(host: "127.0.0.1", port: address.port!)
        configuration.backoff.base = .milliseconds(10)
        configuration.backoff.cap = .milliseconds(100)
        let connected = NIOLockedValueBox(0)
        let dialer = TetherDialerService(configuration: configuration, tls: nil, onConnection: { _ in
            connected.withLockedValue { $0 += 1 }
        })
        let dialing = Self.serviceGroup([dialer])
        let running = Task { try await dialing.run() }
        let first = try await waitFor { listener.connections.first }
        // Dropped only once the dialer has it too: dropped before its SETTINGS arrive, it is a
        // failed dial, not a connection (`onConnection` is not called), and the count stays at 1.
        _ = try await waitFor { connected.withLockedValue { $0 } >= 1 ? true : nil }
        await first.close()
        _ = try await waitFor { connected.withLockedValue { $0 } >= 2 ? true : nil }
        let second = try await waitFor { dialer.connection }
        _ = try await second.ready()
        await dialing.triggerGracefulShutdown()
        try await running.value
        await listening.triggerGracefulShutdown()
        try await serving.value
    }

    /// A graceful shutdown while the dialer waits for the hub's SETTINGS: the connection it gets
    /// next is drained at once (GOAWAY), and the dialer ends when the hub closes it. Before, the
    /// shutdown found no connection to drain and the dialer kept the new one for as long as the
    /// hub did (a CI run waited 20 minutes).
    @Test(.timeLimit(.minutes(2))) func aShutdownWhileTheHubHasNotAnsweredDrainsTheConnectionItGets() async throws {
        let (accepted, acceptedContinuation) = AsyncStream<any Channel>.makeStream()
        let received = NIOLockedValueBox(ByteBuffer())
        let hub = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Received(into: received))
                    acceptedContinuation.yield(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        var configuration = TetherDialerService.Configuration(host: "127.0.0.1", port: hub.localAddress!.port!)
        // However long this test's task waits for a CPU, the dialer does not give up on SETTINGS.
        configuration.connection.session.abuseLimits.prefaceTimeout = .seconds(600)
        let dialer = TetherDialerService(configuration: configuration, tls: nil)
        let group = Self.serviceGroup([dialer])
        let running = Task { try await group.run() }
        var connections = accepted.makeAsyncIterator()
        let hubSide = try #require(await connections.next())
        // The dialer waits for SETTINGS. The shutdown comes now; a moment lets it reach the dialer
        // before the hub answers (were it later, the test could only miss the bug, not fail).
        await group.triggerGracefulShutdown()
        try await Task.sleep(for: .milliseconds(300))
        var preface = ByteBuffer()
        preface.writePreface(Settings())
        try await hubSide.writeAndFlush(preface)
        _ = try await waitFor {
            var decoder = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF), expectsPreface: true)
            decoder.append(received.withLockedValue { $0 })
            while let frame = try? decoder.nextFrame() {
                if case .goAway = frame { return true }
            }
            return nil
        }
        try await hubSide.close()
        try await running.value
        try await hub.close()
    }

    private final class Received: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let into: NIOLockedValueBox<ByteBuffer>
        init(into: NIOLockedValueBox<ByteBuffer>) { self.into = into }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = self.unwrapInboundIn(data)
            self.into.withLockedValue { $0.writeBuffer(&bytes) }
        }
    }

    /// A graceful shutdown during the backoff ends the dialer at once, not when the wait is over
    /// (it slept out up to `cap` before).
    @Test func aShutdownCutsTheBackoffShort() async throws {
        // A port that refuses: every dial fails and the dialer backs off.
        let refusing = try RefusingPort()
        defer { refusing.close() }
        var configuration = TetherDialerService.Configuration(host: "127.0.0.1", port: refusing.port)
        configuration.backoff.base = .seconds(600)
        configuration.backoff.cap = .seconds(600)
        configuration.backoff.jitter = { 1 }  // every wait is the whole 600 s
        let dialer = TetherDialerService(configuration: configuration, tls: nil)
        let group = Self.serviceGroup([dialer])
        let running = Task { try await group.run() }
        try await Task.sleep(for: .milliseconds(200))  // the first dial fails at once; the dialer waits
        let started = ContinuousClock.now
        await group.triggerGracefulShutdown()
        try await running.value
        // Before, the 600 s wait was slept out. However loaded the machine, a shutdown that cuts
        // the wait returns long before it would have ended.
        #expect(ContinuousClock.now - started < .seconds(300))
    }
}
