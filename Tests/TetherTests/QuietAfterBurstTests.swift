import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherBench
import TetherSession
import TetherWire
import Testing

/// Liveness after a burst (spec §7.4, §10.1): a connection whose windows grew during a bulk
/// transfer and then falls quiet keeps its event loop idle and answers at once. A timer deadline
/// in the past used to re-arm itself forever: SwiftNIO runs due timers before it polls sockets, so
/// the loop spun at 100 % and never read again, and every connection on it died at the keepalive
/// timeout.
@Suite struct QuietAfterBurstTests {
    @Test(arguments: Transport.allCases)
    func aQuietConnectionAfterABurstSleepsAndAnswers(_ transport: Transport) async throws {
        // A pool of its own, to see that the windows grew: that is what the bug needed. Small
        // initial windows on a 10 ms path hold the sender back, so they grow on every run.
        let pool = WindowPool(capacity: 1 << 30)
        var settings = Settings()
        settings.initialStreamCredit = 16_384
        var dialer = TetherConnectionHandler.Configuration(role: .dialer, settings: settings)
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        dialer.session.windowTuning.pool = pool
        acceptor.session.windowTuning.pool = pool
        let loopback = try await Loopback.start(
            transport, dialer: dialer, acceptor: acceptor, through: LinkProfile(rtt: .milliseconds(10), bitsPerSecond: 10e9))
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
        // A bulk upload, echoed, on a stream that stays open: its windows grow and stay grown.
        let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
        let total = 16 << 20
        let (progress, progressContinuation) = AsyncStream<Int>.makeStream()
        // Reads the echo of the upload, then of the command sent after the quiet seconds.
        let reader = Task {
            var received = 0
            for try await chunk in stream.chunks {
                received += chunk.readableBytes
                progressContinuation.yield(received)
                if received >= total + 64 { break }
            }
            return received
        }
        let piece = randomPayload(count: 1 << 20, seed: 7)
        for _ in 0..<(total >> 20) { try await stream.write(piece) }
        for await received in progress where received >= total { break }
        try #require(pool.used > 0, "the windows did not grow: the test would prove nothing")

        // Three quiet seconds: both event-loop threads stay (nearly) asleep.
        let threads = try await [loopback.dialer.eventLoop, loopback.acceptor.eventLoop].asyncMap {
            try await $0.submit { try EventLoopThread.current() }.get()
        }
        let before = threads.map { $0.cpuNanoseconds() }
        try await Task.sleep(for: .seconds(3))
        let used = zip(threads, before).map { ($0.cpuNanoseconds() - $1) / 1_000_000 }
        for milliseconds in used {
            #expect(milliseconds < 20, "an event-loop thread used \(milliseconds) ms of CPU while the connection was quiet")
        }

        // And a 64-octet command still makes the round trip.
        try await stream.write(ByteBuffer(repeating: 0x2A, count: 64))
        let received = try await withTimeout(.seconds(10)) { try await reader.value }
        #expect(received == total + 64)
        server.cancel()
        try await loopback.stop()
    }
}

/// A thread of this process, to read how much CPU it used.
struct EventLoopThread: Sendable {
    /// `/proc/<pid>/task/<tid>`.
    let directory: String

    /// The calling thread (Linux: `/proc/thread-self` links to its directory).
    static func current() throws -> EventLoopThread {
        EventLoopThread(directory: "/proc/" + (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")))
    }

    /// CPU time the thread ran, from the scheduler's own accounting (nanoseconds).
    func cpuNanoseconds() -> Int {
        let text = (try? String(contentsOfFile: self.directory + "/schedstat", encoding: .utf8)) ?? ""
        return Int(text.split(separator: " ").first ?? "") ?? 0
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

struct TimedOut: Error {}

/// Runs `body`, failing with ``TimedOut`` if it takes longer than `limit` — for a test that would
/// otherwise hang until the keepalive gives up. The body is left running when it times out:
/// waiting on an event-loop future ignores cancellation, so nothing could wait for it to end.
func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let waiter = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    return try await withCheckedThrowingContinuation { continuation in
        waiter.withLockedValue { $0 = continuation }
        let work = Task {
            do {
                let value = try await body()
                waiter.withLockedValue { $0.take() }?.resume(returning: value)
            } catch {
                waiter.withLockedValue { $0.take() }?.resume(throwing: error)
            }
        }
        Task {
            try? await Task.sleep(for: limit)
            waiter.withLockedValue { $0.take() }?.resume(throwing: TimedOut())
            work.cancel()
        }
    }
}
