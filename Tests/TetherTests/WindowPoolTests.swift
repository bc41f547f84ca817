import NIOCore
import NIOPosix
import Tether
import TetherBench
import TetherSession
import TetherWire
import Testing

/// spec §7.4 step 4: window growth comes from a process-wide pool, and every connection gives
/// its growth back when it closes — the connection window's and that of streams still open.
@Suite struct WindowPoolTests {
    @Test func closedConnectionsGiveTheirWindowGrowthBackToThePool() async throws {
        // A pool of its own, small enough that leaking connections would soon exhaust it. Small
        // initial windows on a 10 ms path hold the sender back, so every connection's windows grow.
        let pool = WindowPool(capacity: 16 << 20)
        var settings = Settings()
        settings.initialStreamCredit = 16_384
        settings.initialConnectionCredit = 65_536
        var dialer = TetherConnectionHandler.Configuration(role: .dialer, settings: settings)
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        dialer.session.windowTuning.pool = pool
        acceptor.session.windowTuning.pool = pool
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

        for round in 0...100 {
            let loopback = try await Loopback.start(
                .tcp, dialer: dialer, acceptor: acceptor, group: group, through: LinkProfile(rtt: .milliseconds(10), bitsPerSecond: 10e9))
            let server = Task {
                for try await stream in loopback.acceptor.inboundStreams {
                    Task { for try await chunk in stream.chunks { try await stream.write(chunk) } }
                }
            }
            // A bulk upload, echoed, on a stream left open when the connection closes.
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
            let piece = randomPayload(count: 64 << 10, seed: UInt64(round))
            for _ in 0..<(total / piece.readableBytes) { try await stream.write(piece) }
            #expect(try await reader.value == total)
            // The 101st connection shows that windows still grow once 100 came and went.
            try #require(pool.used > 0, "round \(round): the windows did not grow")
            server.cancel()
            try await loopback.close()
            #expect(pool.used == 0, "round \(round): \(pool.used) octets of growth not given back")
        }
        try await group.shutdownGracefully()
    }
}
