import NIOCore
import NIOPosix
import Tether
import TetherSession
import TetherWire
import Testing

/// spec §10.2: a GOAWAY drains; no accepted byte is lost; no new stream is opened.
@Suite struct DrainTests {
    @Test(arguments: Transport.allCases)
    func goAwayDrainsWithoutLosingAnAcceptedByte(_ transport: Transport) async throws {
        let loopback = try await Loopback.start(transport)
        let streamCount = 20
        let accepted = AsyncStream<Void>.makeStream()
        let server = Task {
            try await withThrowingDiscardingTaskGroup { group in
                for try await stream in loopback.acceptor.inboundStreams {
                    accepted.continuation.yield()
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

        // Open every stream and write its first half.
        var streams: [(TetherStream, ByteBuffer)] = []
        for index in 0..<streamCount {
            let payload = randomPayload(count: 256 << 10, seed: UInt64(index))
            let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
            try await stream.write(payload.getSlice(at: 0, length: 128 << 10)!)
            streams.append((stream, payload))
        }
        var acceptedIterator = accepted.stream.makeAsyncIterator()
        for _ in 0..<streamCount { await acceptedIterator.next() }

        // The acceptor drains. Once the dialer has the GOAWAY, new streams are refused locally.
        loopback.acceptor.goAway()
        let goAway = try await loopback.dialer.goAwayReceived()
        #expect(goAway.code == .noError)
        #expect(goAway.lastStreamID == .announcingDrain)  // the announcement; the final one names stream 39
        let refused = await #expect(throws: TetherError.self) {
            _ = try await loopback.dialer.openStream(service: "echo", class: .bulk)
        }
        #expect(refused?.openError == .draining)
        // The open streams finish, every byte intact.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (stream, payload) in streams {
                group.addTask {
                    try await stream.write(payload.getSlice(at: 128 << 10, length: 128 << 10)!)
                    try await stream.finish()
                    var iterator = stream.messages().makeAsyncIterator()
                    var answer = try #require(try await iterator.next())
                    #expect(answer.readInteger(as: UInt64.self) == payload.checksum)
                }
            }
            try await group.waitForAll()
        }
        // With the last stream done the connection closes by itself.
        _ = await loopback.acceptor.closed()
        _ = await loopback.dialer.closed()
        server.cancel()
        try await loopback.stop()
    }
}
