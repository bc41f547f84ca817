import NIOCore
import NIOPosix
@testable import Tether
import TetherSession
import TetherWire
import Testing

/// Streams over real TCP on 127.0.0.1.
@Suite struct StreamTransferTests {
    /// An echo of checksums: the acceptor reads each stream to its FIN and answers with the
    /// checksum and length of what it read, as one message — through `face`.
    static func serveChecksums(_ connection: TetherConnection, face: Face = .async) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for try await stream in connection.inboundStreams {
                group.addTask {
                    let received = try await face.readAll(stream)
                    var answer = ByteBuffer()
                    answer.writeMultipleIntegers(received.checksum, UInt64(received.readableBytes))
                    try await face.write(stream, answer, endMessage: true)
                    try await face.finish(stream)
                }
            }
        }
    }

    @Test(arguments: Face.all)
    func oneStreamRoundTrip(_ transport: Transport, _ face: Face) async throws {
        let loopback = try await Loopback.start(transport)
        let server = Task { try await Self.serveChecksums(loopback.acceptor, face: face) }
        let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
        let payload = randomPayload(count: 1 << 20, seed: 1)
        try await face.write(stream, payload)
        try await face.finish(stream)
        let answers = try await face.messages(stream)
        #expect(answers.count == 1)
        var answer = answers[0]
        let (sum, length) = answer.readMultipleIntegers(as: (UInt64, UInt64).self)!
        #expect(length == 1 << 20)
        #expect(sum == payload.checksum)
        server.cancel()
        try await loopback.stop()
    }

    /// Streams that arrived together are taken together: one hop to the event loop for a burst,
    /// so a busy application accepts each within the open timeout (spec §6.2).
    @Test func aBurstOfStreamsIsTakenInOneHop() async throws {
        var settings = Settings()
        settings.initialStreams[.bulk] = 1_024
        let acceptor = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        let loopback = try await Loopback.start(.tcp, acceptor: acceptor)
        for _ in 0..<300 { _ = try await loopback.dialer.openStream(service: "burst", class: .bulk) }
        let handler = loopback.acceptor.handler
        let arrived = try await BackpressureTests.waitUntil(eventLoop: loopback.acceptor.eventLoop) {
            handler.value.activeStreamCount == 300 ? true : nil
        }
        try #require(arrived == true)
        let first = try await loopback.acceptor.withHandler { $0.nextInboundStreams(upTo: 256) }.get()
        let second = try await loopback.acceptor.withHandler { $0.nextInboundStreams(upTo: 256) }.get()
        #expect(first.count == 256)
        #expect(second.count == 44)
        #expect(Set((first + second).map(\.id)).count == 300)
        try await loopback.stop()
    }

    /// 1,000 concurrent streams, each a checksummed random payload, all arrive intact.
    @Test(arguments: Face.all)
    func thousandConcurrentStreamsArriveIntact(_ transport: Transport, _ face: Face) async throws {
        var settings = Settings()
        settings.initialStreams[.bulk] = 1_024
        let loopback = try await Loopback.start(transport, acceptor: .init(role: .acceptor, settings: settings))
        let server = Task { try await Self.serveChecksums(loopback.acceptor, face: face) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<1_000 {
                group.addTask {
                    let payload = randomPayload(count: 1_000 + (index * 7_919) % 40_000, seed: UInt64(index))
                    let stream = try await loopback.dialer.openStream(service: "echo", class: .bulk)
                    try await face.write(stream, payload)
                    try await face.finish(stream)
                    let answers = try await face.messages(stream)
                    try #require(answers.count == 1, "stream \(stream.id): \(answers.count) answers")
                    var answer = answers[0]
                    let (sum, length) = answer.readMultipleIntegers(as: (UInt64, UInt64).self)!
                    #expect(length == UInt64(payload.readableBytes))
                    #expect(sum == payload.checksum, "stream \(stream.id)")
                }
            }
            try await group.waitForAll()
        }
        let counters = try await loopback.acceptor.counters()
        #expect(counters.streamsOpenedByPeer == 1_000)
        server.cancel()
        try await loopback.stop()
    }
}
