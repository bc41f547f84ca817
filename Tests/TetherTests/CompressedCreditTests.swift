import NIOCore
import NIOPosix
import Tether
import TetherSession
import TetherWire
import Testing

/// spec §7.1, §9.3: a compressed unit goes whole in one frame, so it waits until the connection
/// credit covers all of it — and must be woken when a CREDIT makes that so, whatever credit was
/// left before. A stream parked with some credit left used to be woken only when credit had run
/// out entirely: with every other stream done, it and its FIN waited forever.
@Suite struct CompressedCreditTests {
    @Test(arguments: Face.all)
    func compressedStreamsUnderConnectionCreditPressureAllFinish(_ transport: Transport, _ face: Face) async throws {
        // A small connection window that does not grow: units of several KiB often find less left.
        var settings = Settings()
        settings.initialConnectionCredit = 32_768
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        acceptor.session.windowTuning = .disabled
        let loopback = try await Loopback.start(transport, acceptor: acceptor)
        let server = Task {
            try await withThrowingDiscardingTaskGroup { group in
                for try await stream in loopback.acceptor.inboundStreams {
                    group.addTask {
                        let received = try await face.readAll(stream)
                        var answer = ByteBuffer()
                        answer.writeInteger(received.checksum)
                        answer.writeInteger(UInt64(received.readableBytes))
                        try await face.write(stream, answer, endMessage: true)
                        try await face.finish(stream)
                    }
                }
            }
        }

        try await withTimeout(.seconds(120)) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<48 {
                    group.addTask {
                        let stream = try await loopback.dialer.openStream(service: "logs/\(index)", class: .logs)
                        var sent = Checksum()
                        var length = 0
                        for batch in 0..<24 {
                            // Log text with a random tail per batch: units of a few KiB each.
                            var bytes = CompressionTests.logText(lines: 60, seed: index * 1_000 + batch * 60)
                            var noise = randomPayload(count: 3_000 + (index * 131 + batch * 17) % 4_000, seed: UInt64(index * 100 + batch))
                            bytes.writeBuffer(&noise)
                            sent.add(bytes)
                            length += bytes.readableBytes
                            try await face.write(stream, bytes)
                        }
                        try await face.finish(stream)
                        var answer = try #require(try await face.messages(stream).first)
                        #expect(answer.readInteger(as: UInt64.self) == sent.value, "stream \(index)")
                        #expect(answer.readInteger(as: UInt64.self) == UInt64(length), "stream \(index)")
                    }
                }
                try await group.waitForAll()
            }
        }
        let counters = try await loopback.dialer.counters()
        #expect(counters.dataOctetsSent < 48 * 24 * 10_000, "the streams were compressed")
        server.cancel()
        try await loopback.stop()
    }
}
