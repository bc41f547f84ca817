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
