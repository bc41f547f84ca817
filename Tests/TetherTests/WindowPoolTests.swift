import NIOCore
import NIOPosix
import Tether
import TetherBench
import TetherSession
import TetherTLS
import TetherWire
import Testing

@testable import TetherRelay

/// spec §7.4 step 4: window growth comes from a process-wide pool, and every connection gives
/// its growth back when it closes — the connection window's and that of streams still open.
@Suite struct WindowPoolTests {
    @Test func closedConnectionsGiveTheirWindowGrowthBackToThePool() async throws {
        // A pool of its own, small enough that leaking connections would soon exhaust it. Small
        // initial windows on a 10 ms path hold the sender back, so connections' windows grow.
        let pool = WindowPool(capacity: 16 << 20)
        var settings = Settings()
        settings.initialStreamCredit = 16_384
        settings.initialConnectionCredit = 65_536
        var dialer = TetherConnectionHandler.Configuration(role: .dialer, settings: settings)
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        dialer.session.windowTuning.pool = pool
        acceptor.session.windowTuning.pool = pool
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

        let link = LinkProfile(rtt: .milliseconds(10), bitsPerSecond: 10e9)
        // One connection: a bulk upload, echoed, on a stream left open when the connection closes.
        // Returns whether its windows grew.
        func round(_ seed: UInt64) async throws -> Bool {
            let loopback = try await Loopback.start(.tcp, dialer: dialer, acceptor: acceptor, group: group, through: link)
            let server = Task {
                for try await stream in loopback.acceptor.inboundStreams {
                    Task { for try await chunk in stream.chunks { try await stream.write(chunk) } }
                }
            }
            // Clean RTT samples both ways: on a busy machine the one taken with the preface can be
            // inflated, and a window grows only while arrivals pause for a quarter of the minimum.
            for _ in 0..<3 {
                async let there = loopback.dialer.ping()
                async let back = loopback.acceptor.ping()
                _ = try await (there, back)
            }
            let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
            let total = 512 << 10
            let reader = Task {
                var received = 0
                for try await chunk in stream.chunks {
                    received += chunk.readableBytes
                    if received >= total { break }
                }
                return received
            }
            let piece = randomPayload(count: 64 << 10, seed: seed)
            for _ in 0..<(total / piece.readableBytes) { try await stream.write(piece) }
            #expect(try await reader.value == total)
            let grew = pool.used > 0
            server.cancel()
            try await loopback.close()
            #expect(pool.used == 0, "round \(seed): \(pool.used) octets of growth not given back")
            return grew
        }

        var grew = 0
        for seed in 0..<100 where try await round(UInt64(seed)) { grew += 1 }
        // Growth depends on timing a loaded machine can disturb, so not every round must grow —
        // but enough must for the test to mean something.
        #expect(grew >= 50, "the windows grew on only \(grew) of 100 connections")
        // And after 100 connections the pool is not used up: a new one still grows (given a few
        // tries, for the same reason).
        var stillGrows = false
        for seed in 100..<105 where !stillGrows { stillGrows = try await round(UInt64(seed)) }
        #expect(stillGrows, "no window grows after 100 connections came and went")
        try await group.shutdownGracefully()
    }
}

/// README `limits.windowMemoryPerIdentity`: a hub's connections of one identity draw their
/// initial connection windows from one pool, so however many there are, what they can make the
/// hub buffer is bounded; a connection that closes gives its part back.
@Suite struct IdentityWindowTests {
    @Test func connectionsOfOneIdentityShareAWindowPool() async throws {
        let certificates = try ThrowAwayCertificates()
        defer { certificates.remove() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let agents = HubAgents(connectionsPerIdentity: 8, windowMemoryPerIdentity: 10 << 20, revoked: .init())
        let listener = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: try TLSContextStore(configuration: certificates.hub),
            configuration: .init(role: .acceptor), admission: { peer, _ in agents.admit(peer) },
            configurator: { peer, configuration in agents.configure(peer, &configuration) },
            onConnection: { connection in connection.closeCode.whenComplete { _ in agents.down(connection) } })
        let edge = try TLSContext(configuration: certificates.edge)
        func dial() async throws -> (TetherConnection, UInt32) {
            let connection = try await TetherTransport.dial(
                group: group, to: listener.localAddress!, tls: edge, configuration: .init(role: .dialer))
            return (connection, try await connection.ready().initialConnectionCredit)
        }
        let guaranteed = UInt32(WindowTuning.guaranteedInitialWindow)
        let full = Settings().initialConnectionCredit  // 4 MiB
        var held: [TetherConnection] = []
        var announced: [UInt32] = []
        for _ in 0..<4 {
            let (connection, credit) = try await dial()
            held.append(connection)
            announced.append(credit)
        }
        // 10 MiB: two whole windows, then what is left over the guaranteed 64 KiB, then none.
        let left = UInt32(10 << 20) - 2 * (full - guaranteed)
        #expect(announced == [full, full, guaranteed + left, guaranteed])
        // One closes: the next connection gets its part back.
        await held.removeFirst().close()
        var again: UInt32 = 0
        for _ in 0..<100 where again != full {
            let (connection, credit) = try await dial()
            again = credit
            await connection.close()
            if credit != full { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(again == full)
        for connection in held { await connection.close() }
        try await listener.close()
        try await group.shutdownGracefully()
    }
}
