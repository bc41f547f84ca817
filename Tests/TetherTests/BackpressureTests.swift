import NIOCore
import NIOPosix
import Tether
import TetherSession
import TetherWire
import Testing

/// spec §7: a reader that stops holds at most its window; everyone else keeps flowing.
@Suite struct BackpressureTests {
    @Test(arguments: Transport.allCases)
    func stalledReaderHoldsAtMostItsWindowWhileOthersFinish(_ transport: Transport) async throws {
        var settings = Settings()
        settings.initialStreams[.bulk] = 1_024
        let window = Int(settings.initialStreamCredit)
        let loopback = try await Loopback.start(transport, acceptor: .init(role: .acceptor, settings: settings))
        let stalledPayload = randomPayload(count: 4 << 20, seed: 99)

        // The acceptor echoes checksums, except that it parks the "stalled" stream unread.
        let parked = AsyncStream<TetherStream>.makeStream()
        let server = Task {
            try await withThrowingDiscardingTaskGroup { group in
                for try await stream in loopback.acceptor.inboundStreams {
                    if stream.service == "stalled" {
                        parked.continuation.yield(stream)
                        continue
                    }
                    group.addTask {
                        var sum = Checksum()
                        for try await chunk in stream.chunks { sum.add(chunk) }
                        var answer = ByteBuffer()
                        answer.writeInteger(sum.value)
                        try await stream.writeMessage(answer)
                        try await stream.finish()
                    }
                }
            }
        }

        let stalled = try await loopback.dialer.openStream(service: "stalled", class: .bulk)
        let stalledWriter = Task {
            try await stalled.write(stalledPayload)
            try await stalled.finish()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<999 {
                group.addTask {
                    let payload = randomPayload(count: 2_000 + index * 13, seed: UInt64(index))
                    let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
                    try await stream.write(payload)
                    try await stream.finish()
                    var iterator = stream.messages().makeAsyncIterator()
                    var answer = try #require(try await iterator.next())
                    #expect(answer.readInteger(as: UInt64.self) == payload.checksum)
                }
            }
            try await group.waitForAll()
        }

        // The 999 finished. The stalled stream's receiver holds exactly its window — the sender
        // is blocked on credit, not on time — and the sender's buffer stays within its limit.
        var parkedIterator = parked.stream.makeAsyncIterator()
        let parkedStream = try #require(await parkedIterator.next())
        let held = try await Self.waitUntil(eventLoop: parkedStream.eventLoop) {
            let held = parkedStream.handle.bufferedInboundOctets
            return held == window ? held : nil
        }
        #expect(held == window)
        let unsent = try await stalled.eventLoop.submit { stalled.handle.isWritable }.get()
        #expect(!unsent, "the writer is still waiting for room")

        // Now the reader reads: everything arrives, intact.
        var sum = Checksum()
        var length = 0
        for try await chunk in parkedStream.chunks {
            sum.add(chunk)
            length += chunk.readableBytes
        }
        #expect(length == stalledPayload.readableBytes)
        #expect(sum.value == stalledPayload.checksum)
        try await stalledWriter.value
        server.cancel()
        try await loopback.stop()
    }

    /// Polls `condition` on the event loop until it yields a value (or a minute passes, which would
    /// mean the condition never comes true).
    static func waitUntil<T: Sendable>(
        eventLoop: any EventLoop, _ condition: @escaping @Sendable () -> T?
    ) async throws -> T? {
        for _ in 0..<6_000 {
            if let value = try await eventLoop.submit(condition).get() { return value }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }
}
