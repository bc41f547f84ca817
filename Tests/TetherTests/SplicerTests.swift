import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
@testable import Tether
import TetherRelay
import TetherSession
import TetherWire
import Testing

/// The library's splicer over real sockets (spec §7.2, §6.4, §6.5): a relay in one process, as the
/// daemons will run it — local TCP → edge → stream → hub → backend TCP — with the sockets on other
/// event loops than the tunnel's.
@Suite(.timeLimit(.minutes(5))) struct SplicerTests {
    /// A local listener at the edge, a tunnel, and a backend behind the hub; every accepted local
    /// connection is spliced to a stream, every stream to a new backend connection.
    struct Rig {
        let loopback: Loopback
        /// The local sockets and the backend's: not the tunnel's event loops.
        let sockets: MultiThreadedEventLoopGroup
        let entrance: any Channel
        let backend: any Channel
        /// How each splice ended, edge side and hub side.
        let outcomes: NIOLockedValueBox<[StreamSplicer.Outcome]>

        static func start(
            _ transport: Transport, acceptor: TetherConnectionHandler.Configuration = .init(role: .acceptor),
            entranceOnTunnelLoop: Bool = false, streamClass: StreamClass = .bulk,
            backend: @escaping @Sendable (any Channel) throws -> Void
        ) async throws -> Rig {
            let sockets = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let outcomes = NIOLockedValueBox<[StreamSplicer.Outcome]>([])
            let backendChannel = try await ServerBootstrap(group: sockets)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try backend(channel) } }
                .bind(host: "127.0.0.1", port: 0).get()
            let backendAddress = backendChannel.localAddress!
            let hub: TetherConnectionHandler.InboundStreamHandler = { handle in
                ClientBootstrap(group: sockets)
                    .channelOption(StreamSplicer.autoRead, value: false)
                    .channelOption(StreamSplicer.halfClosure, value: true)
                    .connect(to: backendAddress).whenComplete { result in
                        switch result {
                        case .success(let channel):
                            channel.eventLoop.execute {
                                StreamSplicer.splice(channel, with: handle).whenSuccess { outcome in
                                    outcomes.withLockedValue { $0.append(outcome) }
                                }
                            }
                        case .failure:
                            handle.eventLoop.execute { handle.refuse(.connectError) }
                        }
                    }
            }
            let loopback = try await Loopback.start(transport, acceptor: acceptor, inboundStreamHandler: hub)
            let connection = loopback.dialer
            // The socket options a splice needs, set before the socket is active (the splicer's
            // doc); the splice starts in the initializer, before the socket is registered.
            let entrance = try await ServerBootstrap(group: entranceOnTunnelLoop ? connection.channel.eventLoop : sockets)
                .childChannelOption(StreamSplicer.autoRead, value: false)
                .childChannelOption(StreamSplicer.halfClosure, value: true)
                .childChannelInitializer { channel in
                    connection.openStreamHandle(service: "backend", class: streamClass).hop(to: channel.eventLoop).map { handle in
                        StreamSplicer.splice(channel, with: handle).whenSuccess { outcome in
                            outcomes.withLockedValue { $0.append(outcome) }
                        }
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            return Rig(
                loopback: loopback, sockets: sockets, entrance: entrance, backend: backendChannel, outcomes: outcomes)
        }

        /// A client of the relay: a local TCP connection to the entrance.
        func connect(_ handler: any ChannelHandler & Sendable) async throws -> any Channel {
            try await ClientBootstrap(group: self.sockets)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) } }
                .connect(to: self.entrance.localAddress!).get()
        }

        func stop() async throws {
            try await self.entrance.close()
            try await self.backend.close()
            try await self.loopback.stop()
            try await self.sockets.shutdownGracefully()
        }
    }

    /// 100 MiB through the relay and back (the backend echoes), checksummed both ways.
    @Test(arguments: Transport.allCases)
    func a100MiBRoundTripArrivesIntact(_ transport: Transport) async throws {
        let rig = try await Rig.start(transport) { channel in try channel.pipeline.syncOperations.addHandler(EchoBack()) }
        let client = Client()
        let channel = try await rig.connect(client)
        let total = 100 << 20
        var sent = Checksum()
        var remaining = total
        var seed: UInt64 = 0
        while remaining > 0 {
            let piece = randomPayload(count: min(1 << 20, remaining), seed: seed)
            seed += 1
            sent.add(piece)
            remaining -= piece.readableBytes
            try await channel.writeAndFlush(piece)
        }
        try await channel.close(mode: .output)  // FIN: the backend finishes echoing, then closes
        let (received, checksum) = try await client.finished.futureResult.get()
        #expect(received == total)
        #expect(checksum == sent.value)
        try await rig.stop()
    }

    /// A LOGS stream compresses (spec §9): the splice reads the socket only while the stream takes
    /// writes, and the stream says so again when its compressor's batch is flushed — octets that
    /// waited for a batch while the session's queue was below its mark once stalled the splice
    /// for good (the session, which never crossed its mark, did not say "writable").
    @Test(arguments: Transport.allCases)
    func aCompressedLogsSpliceCarriesEverything(_ transport: Transport) async throws {
        let rig = try await Rig.start(transport, streamClass: .logs) { channel in
            try channel.pipeline.syncOperations.addHandler(EchoBack())
        }
        var text = ""
        for index in 0..<600 {
            text += "Dec  1 06:26:\(10 + index % 50) node-1 kubelet[1234]: I1201 pod_workers.go:\(900 + index)] "
            text += "\"SyncLoop (PLEG): event for pod\" pod=\"default/web-\(index % 7)\" seq=\(index * 7919)\n"
        }
        let chunk = ByteBuffer(string: text)
        for connection in 0..<2 {
            let client = Client()
            let channel = try await rig.connect(client)
            var sent = Checksum()
            let writes = (16 << 20) / chunk.readableBytes
            var written: EventLoopFuture<Void>?
            for _ in 0..<writes {
                sent.add(chunk)
                written = channel.write(chunk)
            }
            channel.flush()
            // A stall shows as no progress at all: the test fails instead of hanging.
            let allWritten = NIOLockedValueBox(false)
            written?.whenComplete { _ in allWritten.withLockedValue { $0 = true } }
            guard try await Self.progresses(until: { allWritten.withLockedValue { $0 } }, by: { client.received }) else {
                Issue.record("connection \(connection) stalled at \(client.received) octets echoed")
                channel.close(promise: nil)
                break
            }
            try await channel.close(mode: .output)
            guard try await Self.progresses(until: { client.isFinished }, by: { client.received }) else {
                Issue.record("connection \(connection) stalled at \(client.received) octets echoed")
                channel.close(promise: nil)
                break
            }
            let (received, checksum) = try await client.finished.futureResult.get()
            #expect(received == writes * chunk.readableBytes, "connection \(connection)")
            #expect(checksum == sent.value)
        }
        try await rig.stop()
    }

    /// Waits until `done`; false when `measure` stayed the same for 30 s first (a stall, not a
    /// slow machine: any progress at all restarts the count).
    static func progresses(until done: () -> Bool, by measure: () -> Int) async throws -> Bool {
        var last = -1
        var quiet = 0
        while !done() {
            guard quiet < 300 else { return false }
            try await Task.sleep(for: .milliseconds(100))
            let now = measure()
            quiet = now == last ? quiet + 1 : 0
            last = now
        }
        return true
    }

    /// A relay with one event loop: the local socket on the tunnel's loop, where opening the
    /// stream completes at once and the splice starts before NIO has registered the socket.
    @Test(arguments: Transport.allCases)
    func aSpliceOnTheTunnelsOwnEventLoop(_ transport: Transport) async throws {
        let rig = try await Rig.start(transport, entranceOnTunnelLoop: true) { channel in
            try channel.pipeline.syncOperations.addHandler(EchoBack())
        }
        let client = Client()
        let channel = try await rig.connect(client)
        let payload = randomPayload(count: 1 << 20, seed: 7)
        try await channel.writeAndFlush(payload)
        try await channel.close(mode: .output)
        let (received, checksum) = try await client.finished.futureResult.get()
        #expect(received == payload.readableBytes)
        #expect(checksum == payload.checksum)
        try await rig.stop()
    }

    /// A stream the peer refused before its splice began, spliced with an accepted socket in the
    /// socket's initializer on the stream's own event loop — before NIO has activated the socket:
    /// the socket is closed all the same, with RST. A hub listener toward a target the edge's
    /// policy denies met this on a loaded machine, and left its client waiting for good.
    @Test func aStreamRefusedBeforeItsSpliceStillClosesTheSocket() async throws {
        let loopback = try await Loopback.start(.tcp, inboundStreamHandler: { $0.refuse(.unknownService) })
        let refused = try await loopback.dialer.openStreamHandle(service: "nowhere", class: .bulk).get()
        while try await refused.eventLoop.submit({ refused.failure == nil }).get() {
            try await Task.sleep(for: .milliseconds(10))
        }
        let outcome = NIOLockedValueBox<StreamSplicer.Outcome?>(nil)
        let entrance = try await ServerBootstrap(group: refused.eventLoop)
            .childChannelOption(StreamSplicer.autoRead, value: false)
            .childChannelOption(StreamSplicer.halfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    StreamSplicer.splice(channel, with: refused).whenSuccess { ended in outcome.withLockedValue { $0 = ended } }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        // Connected, or refused at once: either way the client's connection ends, and with RST.
        let end = NIOLockedValueBox<Client.End?>(nil)
        do {
            let client = Client()
            _ = try await ClientBootstrap(group: loopback.group)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(client)
                        client.ended.futureResult.whenSuccess { how in end.withLockedValue { $0 = how } }
                    }
                }
                .connect(to: entrance.localAddress!).get()
        } catch let error as IOError where error.errnoCode == ECONNRESET {
            end.withLockedValue { $0 = .reset }  // the RST came before the connect completed
        }
        #expect(try await waitFor { end.withLockedValue { $0 } } == .reset)
        let spliced = try await waitFor { outcome.withLockedValue { $0 } }
        #expect(spliced.error?.contains("UNKNOWN_SERVICE") == true, "\(spliced)")
        try await entrance.close()
        try await loopback.stop()
    }

    /// A client that half-closes still receives the whole reply: its FIN reaches the backend as
    /// a FIN, and the backend's reply, written after it, comes back whole before the backend's FIN.
    @Test(arguments: Transport.allCases)
    func aClientThatHalfClosesReceivesTheWholeReply(_ transport: Transport) async throws {
        let reply = randomPayload(count: 3 << 20, seed: 42)
        let rig = try await Rig.start(transport) { channel in
            try channel.pipeline.syncOperations.addHandler(ReplyAtEnd(reply: reply))
        }
        let client = Client()
        let channel = try await rig.connect(client)
        try await channel.writeAndFlush(ByteBuffer(string: "GET /everything"))
        try await channel.close(mode: .output)
        let (received, checksum) = try await client.finished.futureResult.get()
        #expect(received == reply.readableBytes)
        #expect(checksum == reply.checksum)
        // Both splices ended cleanly: the edge's socket, its input ended first, closed whole when
        // the stream's FIN closed its output — not cut off, its stream not reset (the audit's
        // `result`; a reset after FIN would discard what the stream still had queued).
        let outcomes = try await waitFor { rig.outcomes.withLockedValue { $0.count == 2 ? $0 : nil } }
        #expect(outcomes.allSatisfy { $0.error == nil }, "\(outcomes)")
        try await rig.stop()
    }

    /// RESET ↔ RST, both ways: a client that aborts its connection resets the stream and the
    /// backend's connection; a backend that aborts resets the stream and the client's.
    @Test(arguments: Transport.allCases)
    func anAbortOnEitherSideResetsTheOther(_ transport: Transport) async throws {
        let backends = NIOLockedValueBox<[Client]>([])
        let rig = try await Rig.start(transport) { channel in
            let backend = Client()
            backends.withLockedValue { $0.append(backend) }
            try channel.pipeline.syncOperations.addHandler(backend)
        }
        // The client aborts.
        let client = Client()
        let channel = try await rig.connect(client)
        try await channel.writeAndFlush(ByteBuffer(string: "hello"))
        let first = try await waitFor { backends.withLockedValue { $0.first } }
        #expect(try await waitFor { first.received > 0 ? true : nil } == true)
        try await Self.abort(channel)
        let backendEnd = try await first.ended.futureResult.get()
        #expect(backendEnd == .reset, "the backend saw \(backendEnd)")

        // The backend aborts.
        let other = Client()
        let otherChannel = try await rig.connect(other)
        try await otherChannel.writeAndFlush(ByteBuffer(string: "hello"))
        let second = try await waitFor { backends.withLockedValue { $0.count == 2 ? $0[1] : nil } }
        #expect(try await waitFor { second.received > 0 ? true : nil } == true)
        try await Self.abort(second.channel!)
        let clientEnd = try await other.ended.futureResult.get()
        #expect(clientEnd == .reset, "the client saw \(clientEnd)")
        try await rig.stop()
    }

    /// A backend that reads 1 MiB/s while the client sends as fast as it can: what the relay
    /// holds stays within the stream's window and send buffer — the client is slowed through
    /// credit, not buffered for.
    @Test func aSlowBackendHoldsTheRelayToItsWindowAndSendBuffer() async throws {
        let slow = NIOLockedValueBox<SlowReader?>(nil)
        let rig = try await Rig.start(.tcp) { channel in
            let reader = SlowReader(perSecond: 1 << 20)
            slow.withLockedValue { $0 = reader }
            try channel.pipeline.syncOperations.addHandler(reader)
        }
        let client = Client()
        let channel = try await rig.connect(client)
        // Writes only while the socket is writable: the client is held back by TCP, and TCP by
        // the relay, which reads the socket only while its stream takes writes.
        let chunk = randomPayload(count: 64 << 10, seed: 1)
        let writing = Task {
            for _ in 0..<(32 << 20) / chunk.readableBytes { try await channel.writeAndFlush(chunk) }
        }
        // Four seconds of the backend reading slowly; sample what the relay holds meanwhile.
        let reader = try await waitFor { slow.withLockedValue { $0 } }
        // The bound follows the hub's receive window as auto-tuning left it (spec §7.4): while the
        // backend's socket buffer fills, the stream looks fast and its window may grow.
        let sendBuffer = SessionConfiguration(role: .dialer).sendBufferLimit
        var peak = 0
        var window = 0
        for _ in 0..<40 {
            try await Task.sleep(for: .milliseconds(100))
            peak = max(peak, try await rig.held())
            window = max(window, try await rig.loopback.acceptor.withHandler { $0.eventLoop.makeSucceededFuture($0.receiveWindows) }.get())
        }
        let bound = window + sendBuffer + 4 * (64 << 10)
        #expect(window >= Int(Settings().initialStreamCredit))
        #expect(peak <= bound, "the relay held \(peak) octets; window \(window) + send buffer + a read each side: \(bound)")
        #expect(reader.received > 1 << 20, "the backend read \(reader.received)")
        writing.cancel()
        try? await channel.close()
        try await rig.stop()
    }

    // MARK: Helpers

    /// Closes with RST (SO_LINGER 0).
    static func abort(_ channel: any Channel) async throws {
        try await (channel as! any SocketOptionProvider).setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        try await channel.close()
    }
}

extension SplicerTests.Rig {
    /// Octets the relay holds right now: the edge's stream not yet sent, the hub's stream not yet
    /// written to the backend, and what waits in NIO for the backend's socket.
    func held() async throws -> Int {
        var held = 0
        for connection in [self.loopback.dialer, self.loopback.acceptor] {
            held += try await connection.withHandler { handler in
                handler.eventLoop.makeSucceededFuture(handler.heldOctets)
            }.get()
        }
        return held
    }
}

/// Polls `body` every 10 ms for up to a minute until it yields a value.
func waitFor<T: Sendable>(_ body: @escaping @Sendable () -> T?) async throws -> T {
    for _ in 0..<6_000 {
        if let value = body() { return value }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TimedOut()
}

/// One end of a socket: counts and checksums what arrives, and says how the connection ended.
final class Client: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    enum End: Equatable { case fin, reset, other(String) }
    private let lock = NIOLock()
    private var _received = 0
    private var sum = Checksum()
    /// Set when the handler is added, which is before its channel is handed out.
    private(set) var channel: (any Channel)?
    private(set) var finished: EventLoopPromise<(Int, UInt64)>!
    private(set) var ended: EventLoopPromise<End>!

    var received: Int { self.lock.withLock { self._received } }
    var isFinished: Bool { self.lock.withLock { self._finished } }
    private var _finished = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.channel = context.channel
        self.finished = context.eventLoop.makePromise()
        self.ended = context.eventLoop.makePromise()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        self.lock.withLock {
            self._received += bytes.readableBytes
            self.sum.add(bytes)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            self.finished.succeed(self.lock.withLock { self._finished = true; return (self._received, self.sum.value) })
            self.ended.succeed(.fin)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // After our own half-close NIO reports the peer's FIN as a full close (no `inputClosed`);
        // errors came through `errorCaught` first, so this is a clean end.
        self.finished.succeed(self.lock.withLock { self._finished = true; return (self._received, self.sum.value) })
        self.ended.succeed(.fin)
    }

    /// A connection that failed before it was active ends without `channelInactive`; NIO ignores
    /// the completion of a promise that was already completed.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.ended.succeed(.other("removed before it ended"))
        self.finished.fail(ChannelError.ioOnClosedChannel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? IOError, error.errnoCode == ECONNRESET {
            self.ended.succeed(.reset)
        } else {
            self.ended.succeed(.other("\(error)"))
        }
        self.lock.withLock { self._finished = true }
        self.finished.fail(error)
        context.close(promise: nil)
    }
}

/// Echoes everything; half-closes its output when its input ends.
final class EchoBack: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(mode: .output, promise: nil) }
    }
}

/// Reads the request to its end, then sends `reply` and closes.
final class ReplyAtEnd: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let reply: ByteBuffer

    init(reply: ByteBuffer) { self.reply = reply }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return }
        context.writeAndFlush(self.wrapOutboundOut(self.reply)).whenComplete { _ in context.close(promise: nil) }
    }
}

/// Reads at most `perSecond` octets a second: autoRead off, one read per slice of time.
final class SlowReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let perSecond: Int
    private let lock = NIOLock()
    private var _received = 0

    init(perSecond: Int) { self.perSecond = perSecond }

    var received: Int { self.lock.withLock { self._received } }

    func handlerAdded(context: ChannelHandlerContext) {
        context.channel.setOption(.autoRead, value: false).whenSuccess { self.tick(context) }
        _ = context.channel.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16_384))
    }

    /// 16 KiB per read, 64 reads a second: 1 MiB/s.
    private func tick(_ context: ChannelHandlerContext) {
        context.read()
        context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(1e9 * 16_384 / Double(self.perSecond)))) {
            guard context.channel.isActive else { return }
            self.tick(context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        self.lock.withLock { self._received += bytes.readableBytes }
    }
}
