import NIOCore
@testable import TetherBench
import Testing

/// The emulated link the link-bound latency row measures through (`tether bench --link-rtt`).
@Suite struct DelayLineTests {
    /// A router's buffer: however the sender pauses and resumes, no more than the queue limit
    /// (plus the one read that found room) waits to be transmitted — the bound the row's p99
    /// budget counts on. Counted against the whole buffer instead, the queue grew by what the
    /// flight lacked after each pause.
    @Test func aBoundedQueueHoldsNoMoreThanItsLimit() {
        var link = LinkProfile(rtt: .milliseconds(50), bitsPerSecond: 500e6)
        let limit = 256 << 10
        link.queueLimit = limit
        let direction = DelayLine.Direction(link: link)
        let read = ByteBuffer(repeating: 0, count: 16_384)
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var most = 0.0
        var busy = 0
        for step in 0..<4_000 {
            // Reads every 100 µs, with a 20 ms pause every 50 ms: the flight empties, the queue must not grow.
            now = now + .microseconds(step % 500 == 0 ? 20_000 : 100)
            while direction.hasRoom(now: now) { direction.enqueue(read, now: now) }
            let waiting = Double((direction.busyUntil - now).nanoseconds) / 1e9 * link.rate
            most = max(most, waiting)
            if waiting > 0 { busy += 1 }
        }
        #expect(most <= Double(limit + read.readableBytes))
        #expect(most >= Double(limit))  // and it does fill: the sender is never refused below the limit
        #expect(busy == 4_000)  // the link never starves while the sender has data
    }
}
