import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherCompression
import TetherWire
import Testing

/// spec §9: deflate never stalls the event loop other streams depend on. The writer compresses in
/// its own task; the event loop's sweep of idle contexts used to take the lock the writer held
/// across the whole deflate, and the loop — every connection on it — waited until it was done.
@Suite struct CodecLockTests {
    @Test func aPingIsAnsweredWhileTheWriterHoldsTheCodecFor16MiB() async throws {
        var dialer = TetherConnectionHandler.Configuration(role: .dialer)
        dialer.codec.sweepInterval = .milliseconds(1)  // the sweep runs all through the write
        let loopback = try await Loopback.start(.tcp, dialer: dialer)
        let stream = try await loopback.dialer.openStream(service: "logs/app", class: .logs)
        let codec = try #require(stream.handle.codec)

        // A writer's task, on a thread of its own: 16 MiB of log text deflated in one call, whose
        // units it then hands over — still inside the call, as the stream does — only once a PING
        // was answered meanwhile (or a minute passed: the loop was stuck behind the writer).
        var text = ByteBuffer()
        while text.readableBytes < 16 << 20 {
            text.writeImmutableBuffer(CompressionTests.logText(lines: 1_000, seed: text.readableBytes))
        }
        let input = text
        let inside = DispatchSemaphore(value: 0)
        let answered = DispatchSemaphore(value: 0)
        let units = NIOLockedValueBox<Int?>(nil)
        let done = DispatchSemaphore(value: 0)
        // A thread, not a task: it blocks, and must not take a thread from the tasks' pool.
        Thread {
            let count = try? codec.write(input, endMessage: true, maxUnit: 16_375, now: .now()) { units in
                inside.signal()
                return answered.wait(timeout: .now() + 60) == .success ? units.count : 0
            }
            units.withLockedValue { $0 = count }
            done.signal()
        }.start()
        // Round trips from the moment the deflate starts (or, at the latest, while the writer hands
        // its units over); the writer stays inside the call until one is back.
        var handingOver = false
        while !codec.isCompressing && !handingOver {
            handingOver = inside.wait(timeout: .now()) == .success
            try await Task.sleep(for: .milliseconds(1))
        }
        _ = try await loopback.dialer.ping()
        answered.signal()
        while done.wait(timeout: .now()) != .success { try await Task.sleep(for: .milliseconds(5)) }
        #expect(units.withLockedValue { $0 } ?? 0 > 0, "the PING came back only after the writer let go of the codec")
        try await loopback.stop()
    }
}
