import NIOCore
import NIOPosix
import Tether
import TetherBench
import TetherRelay
import TetherSession
import TetherTLS
import TetherTestSupport
import TetherWire
import Testing

/// How the two ends of a loopback test are connected.
enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case tcp
    case tls

    var testDescription: String { self.rawValue }
}

/// A dialer and an acceptor connected over real TCP on 127.0.0.1, with mutual TLS or without.
struct Loopback {
    let group: MultiThreadedEventLoopGroup
    let dialer: TetherConnection
    let acceptor: TetherConnection
    let listener: any Channel
    /// The emulated path between them, when there is one.
    let line: (any Channel)?

    static let fixtures = try! TLSFixtures()

    static func start(
        _ transport: Transport = .tcp,
        dialer dialerConfiguration: TetherConnectionHandler.Configuration = .init(role: .dialer),
        acceptor acceptorConfiguration: TetherConnectionHandler.Configuration = .init(role: .acceptor),
        group: MultiThreadedEventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2),
        through link: LinkProfile? = nil,
        inboundStreamHandler: TetherConnectionHandler.InboundStreamHandler? = nil
    ) async throws -> Loopback {
        // The open timeout (spec §6.2) is 30 s of wall-clock time, and these tests take their
        // streams when they get to it: a full suite on two loaded cores starved some that long.
        // No test over sockets is about that timeout (the session scripts test it, in their time).
        var acceptorConfiguration = acceptorConfiguration
        acceptorConfiguration.session.openTimeout = nil
        let (connections, accepted) = AsyncStream<TetherConnection>.makeStream()
        let serverTLS = transport == .tls ? try TLSContextStore(configuration: Self.fixtures.hub()) : nil
        let clientTLS = transport == .tls ? try TLSContext(configuration: Self.fixtures.edge()) : nil
        let listener = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: serverTLS, configuration: acceptorConfiguration,
            inboundStreamHandler: inboundStreamHandler, onConnection: { accepted.yield($0) })
        // With a link, the dialer reaches the listener through an emulated path with a real round trip.
        var address = listener.localAddress!
        var line: (any Channel)?
        if let link {
            line = try await DelayLine.start(group: group, port: address.port!, link: link)
            address = line!.localAddress!
        }
        let dialer = try await TetherTransport.dial(
            group: group, to: address, tls: clientTLS, configuration: dialerConfiguration)
        var iterator = connections.makeAsyncIterator()
        let acceptor = await iterator.next()!
        _ = try await acceptor.ready()
        return Loopback(group: group, dialer: dialer, acceptor: acceptor, listener: listener, line: line)
    }

    /// Closes both ends and the listeners; leaves the group running.
    func close() async throws {
        await self.dialer.close()
        await self.acceptor.close()
        try await self.listener.close()
        try await self.line?.close()
        // Both handlers have shut down once both channels are closed.
        try await self.dialer.channel.closeFuture.get()
        try await self.acceptor.channel.closeFuture.get()
    }

    func stop() async throws {
        try await self.close()
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
