import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherCompression
import TetherSession
import TetherWire
import Testing

/// spec §9 end to end: LOGS compress by default, incompressible data goes raw, contexts reset
/// after idling, and a decompression bomb becomes a stream error with flat memory.
@Suite struct CompressionTests {
    static func logText(lines: Int, seed: Int = 0) -> ByteBuffer {
        var text = ""
        for index in seed..<(seed + lines) {
            text += "Nov 27 00:00:\(10 + index % 50) node-1 kubelet[1234]: I1127 pod_workers.go:\(900 + index % 97)] "
            text += "\"SyncLoop (PLEG): event for pod\" pod=\"default/web-\(index % 7)\" event=ContainerStarted\n"
        }
        return ByteBuffer(string: text)
    }

    /// Reads a stream to its end and returns everything.
    static func readAll(_ stream: TetherStream) async throws -> ByteBuffer {
        var all = ByteBuffer()
        for try await var chunk in stream.chunks { all.writeBuffer(&chunk) }
        return all
    }

    /// On either face: what is written compresses, and what is read is plain.
    @Test(arguments: Face.all)
    func logStreamsCompressByDefault(_ transport: Transport, _ face: Face) async throws {
        let loopback = try await Loopback.start(transport)
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await face.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/kubelet", class: .logs)
        var sent = ByteBuffer()
        for batch in 0..<50 {
            // Small writes, as a log shipper makes them: the stream batches before each sync flush.
            for line in 0..<40 {
                let text = Self.logText(lines: 1, seed: batch * 40 + line)
                sent.writeImmutableBuffer(text)
                try await face.write(stream, text)
            }
        }
        try await face.finish(stream)
        #expect(try await received.value == sent)
        let wire = try await loopback.dialer.counters().dataOctetsSent
        #expect(wire * 3 < sent.readableBytes, "\(wire) octets on the wire for \(sent.readableBytes)")
        try await loopback.stop()
    }

    @Test(arguments: Face.allCases)
    func incompressibleDataGoesRaw(_ face: Face) async throws {
        let loopback = try await Loopback.start()
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await face.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/binary", class: .logs)
        let payload = randomPayload(count: 2 << 20, seed: 5)
        try await face.write(stream, payload)
        try await face.finish(stream)
        #expect(try await received.value == payload)
        let wire = try await loopback.dialer.counters().dataOctetsSent
        // One probe unit may come out slightly larger; the rest goes raw.
        #expect(wire < payload.readableBytes + 4_096)
        try await loopback.stop()
    }

    /// spec §9.4: a COMPRESSED frame that does not inflate is a COMPRESSION_ERROR for its stream;
    /// what inflated before it is delivered first, on either face, and nothing after it.
    @Test(arguments: Face.allCases)
    func whatInflatedBeforeBadDataIsDeliveredThenTheError(_ face: Face) async throws {
        let loopback = try await Loopback.start()
        // Accepted at once (the open timeout runs until then), read once every frame is there.
        let accepting = Task { () -> TetherStream? in
            var streams = loopback.acceptor.inboundStreams.makeAsyncIterator()
            return try await streams.next()
        }
        let stream = try await loopback.dialer.openStream(service: "logs/app", class: .logs, compression: .deflate)
        let deflater = try Deflater(parameters: DeflateParameters())
        var plain = ByteBuffer()
        var units: [ByteBuffer] = []
        for round in 0..<8 {
            let text = Self.logText(lines: 100, seed: round * 100)
            plain.writeImmutableBuffer(text)
            var unit = ByteBuffer()
            try deflater.compress(text, into: &unit)
            units.append(unit)
        }
        units.append(randomPayload(count: 4_096, seed: 9))  // not DEFLATE
        let handle = stream.handle
        for (index, unit) in units.enumerated() {
            try await handle.eventLoop.flatSubmit {
                handle.writeCompressedUnit(unit, endMessage: false, resetContext: index == 0)
            }.get()
        }
        // Once the PING is answered every frame has arrived: the reader takes them in one go.
        _ = try await loopback.dialer.ping()
        let inbound = try #require(try await accepting.value)
        let (received, failure) = await face.readUntilFailure(inbound)
        #expect(received == plain)
        #expect(failure?.errorCode == .compressionError, "\(String(describing: failure))")
        try await loopback.stop()
    }

    /// spec §9.3: a sender that freed its idle compressor starts the next unit with RESET_CONTEXT,
    /// and a receiver that freed its idle decompressor needs that flag: without it, the unit is a
    /// COMPRESSION_ERROR. Both sides free their contexts between rounds here, so the stream only
    /// arrives whole if every new context was announced.
    @Test(arguments: Face.allCases)
    func aCompressorFreedWhileIdleResetsTheContext(_ face: Face) async throws {
        var dialer = TetherConnectionHandler.Configuration(role: .dialer)
        dialer.compression.idleCompressor = .milliseconds(50)
        dialer.compression.sweepInterval = .milliseconds(10)
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor)
        acceptor.compression.idleDecompressor = .milliseconds(50)
        acceptor.compression.sweepInterval = .milliseconds(10)
        let loopback = try await Loopback.start(dialer: dialer, acceptor: acceptor)
        let (inbound, accepted) = AsyncStream<TetherStream>.makeStream()
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams {
                accepted.yield(stream)
                return try await face.readAll(stream)
            }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/app", class: .logs)
        var sent = ByteBuffer()
        var receiver: TetherStreamHandle?
        for round in 0..<3 {
            let text = Self.logText(lines: 300, seed: round)
            sent.writeImmutableBuffer(text)
            try await face.write(stream, text)
            try await face.flush(stream)
            if receiver == nil {
                var streams = inbound.makeAsyncIterator()
                receiver = try #require(await streams.next()?.handle)
            }
            // Both contexts freed: the next unit comes from a new compressor, to a receiver that
            // can only inflate it as the start of a new context.
            for handle in [stream.handle, receiver!] {
                #expect(try await BackpressureTests.waitUntil(eventLoop: handle.eventLoop) {
                    handle.holdsCompressionContexts ? nil : true
                } == true)
            }
        }
        try await face.finish(stream)
        #expect(try await received.value == sent)
        try await loopback.stop()
    }
}
