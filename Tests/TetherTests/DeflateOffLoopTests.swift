import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherWire
import Testing

/// spec §9: deflate never stalls the event loop other streams depend on. A stream hands each large
/// unit to the connection's runner (NIO's thread pool under ``TetherTransport``) and sends what
/// comes back, in order; the loop goes on meanwhile.
@Suite struct DeflateOffLoopTests {
    @Test(arguments: Transport.allCases)
    func aPingIsAnsweredWhileAUnitIsDeflatedAndTheStreamArrivesWhole(_ transport: Transport) async throws {
        // A runner that deflates on a thread of its own — and, the first time, only once a PING
        // was answered meanwhile (or a minute passed: the loop would have waited on the deflate).
        let answered = DispatchSemaphore(value: 0)
        let held = NIOLockedValueBox(false)
        var dialer = TetherConnectionHandler.Configuration(role: .dialer)
        dialer.compression.offload = { work in
            Thread {
                if !held.withLockedValue({ $0 }) {
                    held.withLockedValue { $0 = true }
                    _ = answered.wait(timeout: .now() + 60)
                }
                work()
            }.start()
        }
        let loopback = try await Loopback.start(transport, dialer: dialer)
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await CompressionTests.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/app", class: .logs)
        var text = ByteBuffer()
        while text.readableBytes < 4 << 20 {
            text.writeImmutableBuffer(CompressionTests.logText(lines: 1_000, seed: text.readableBytes))
        }
        let writer = Task { [text] in
            try await stream.write(text)
            try await stream.finish()
        }
        for _ in 0..<30_000 where !held.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(1)) }
        try #require(held.withLockedValue { $0 }, "no unit was handed to the runner")
        // The first unit is out on the runner; the event loop answers all the same.
        _ = try await withTimeout(.seconds(30)) { try await loopback.dialer.ping() }
        answered.signal()
        try await writer.value
        #expect(try await received.value == text)
        let wire = try await loopback.dialer.counters().dataOctetsSent
        #expect(wire * 3 < text.readableBytes, "compressed: \(wire) octets for \(text.readableBytes)")
        try await loopback.stop()
    }
}
