import NIOCore
import TetherCompression
import TetherWire
import Testing

@testable import Tether

/// spec §9.2–§9.3 at the stream's compressor and decompressor: batching into full units, the raw
/// fallback, and round trips through the reader's side, for the default and zlib's own windows.
@Suite struct StreamCompressionTests {
    static let maxUnit = 16_375

    /// What a stream sends: raw pieces and deflated units, with their flags.
    struct Sent {
        var bytes: ByteBuffer
        var compressed: Bool
        var resetContext: Bool
        var endsMessage: Bool
    }

    /// Drives the compressor as the stream does, deflating every unit here.
    static func drain(_ compression: OutboundCompression, into sent: inout [Sent]) throws {
        while true {
            switch try compression.next(now: .now()) {
            case .idle:
                return
            case .raw(let bytes, let endsMessage):
                sent.append(Sent(bytes: bytes, compressed: false, resetContext: false, endsMessage: endsMessage))
            case .deflate(let job):
                let unit = compression.finished(job, try job.run().get(), now: .now())
                sent.append(Sent(bytes: unit, compressed: true, resetContext: job.resetContext, endsMessage: job.endsMessage))
            }
        }
    }

    /// Writes `text` in `piece`-octet writes, then flushes; returns what the stream would send.
    static func units(_ text: ByteBuffer, piece: Int, configuration: CompressionConfiguration = .init()) throws -> [Sent] {
        let compression = OutboundCompression(configuration: configuration, maxUnit: Self.maxUnit)
        var input = text
        var sent: [Sent] = []
        while input.readableBytes > 0 {
            compression.append(input.readSlice(length: min(piece, input.readableBytes))!, endMessage: false)
            try Self.drain(compression, into: &sent)
        }
        compression.requestFlush()
        try Self.drain(compression, into: &sent)
        #expect(compression.isEmpty)
        return sent
    }

    static func inflateAll(_ sent: [Sent]) throws -> ByteBuffer {
        let reader = InboundInflation(configuration: CompressionConfiguration())
        var output = ByteBuffer()
        for piece in sent {
            var plain = piece.compressed ? try reader.inflate(piece.bytes, resetContext: piece.resetContext, now: .now()) : piece.bytes
            output.writeBuffer(&plain)
        }
        return output
    }

    @Test(arguments: [(Int32(13), Int32(6)), (15, 8)])
    func logTextInSmallWritesStaysCompressedInFullUnits(_ windowBits: Int32, _ memLevel: Int32) throws {
        var configuration = CompressionConfiguration()
        configuration.deflate.windowBits = windowBits
        configuration.deflate.memLevel = memLevel
        let text = CompressionTests.logText(lines: 4_000)
        let sent = try Self.units(text, piece: 4_096, configuration: configuration)
        #expect(try Self.inflateAll(sent) == text)
        #expect(sent.allSatisfy { $0.compressed }, "a tail unit must not trip the raw fallback")
        #expect(sent.allSatisfy { $0.bytes.readableBytes <= Self.maxUnit })
        #expect(sent.first?.resetContext == true && sent.dropFirst().allSatisfy { !$0.resetContext })
        let wire = sent.reduce(0) { $0 + $1.bytes.readableBytes }
        #expect(wire * 3 < text.readableBytes, "\(wire) octets for \(text.readableBytes)")
    }

    @Test func aTailShorterThanAUnitWaitsForTheFlush() throws {
        let compression = OutboundCompression(configuration: CompressionConfiguration(), maxUnit: Self.maxUnit)
        let text = CompressionTests.logText(lines: 400)  // about 50 KiB
        compression.append(text, endMessage: false)
        var early: [Sent] = []
        try Self.drain(compression, into: &early)
        #expect(!early.isEmpty)
        #expect(compression.waitsForBatch, "the tail waits, and a flush is due")
        compression.requestFlush()
        var late: [Sent] = []
        try Self.drain(compression, into: &late)
        #expect(late.count == 1)
        #expect(!compression.waitsForBatch)
        #expect(try Self.inflateAll(early + late) == text)
    }

    @Test func aMessageEndSendsEverythingAndMarksTheLastUnit() throws {
        let compression = OutboundCompression(configuration: CompressionConfiguration(), maxUnit: Self.maxUnit)
        compression.append(CompressionTests.logText(lines: 10), endMessage: true)
        var sent: [Sent] = []
        try Self.drain(compression, into: &sent)
        #expect(sent.count == 1)
        #expect(sent.last?.endsMessage == true)
        #expect(compression.isEmpty)
    }

    @Test func incompressibleDataGoesRawAfterOneProbe() throws {
        let payload = randomPayload(count: 1 << 20, seed: 9)
        let sent = try Self.units(payload, piece: 16_384)
        #expect(try Self.inflateAll(sent) == payload)
        #expect(sent.first?.compressed == true)
        #expect(sent.dropFirst().allSatisfy { !$0.compressed })
    }

    /// spec §9.3: a compressor idle for 20 s is freed and the next unit starts a context the
    /// receiver learns of; a decompressor idle for 60 s is freed unless frames wait for it, and
    /// then a frame without RESET_CONTEXT is an error.
    @Test func idleContextsAreFreedAndAnnounced() throws {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let compression = OutboundCompression(configuration: CompressionConfiguration(), maxUnit: Self.maxUnit)
        compression.append(CompressionTests.logText(lines: 10), endMessage: true)
        guard case .deflate(let first) = try compression.next(now: start) else {
            Issue.record("no unit")
            return
        }
        #expect(first.resetContext)
        let unit = compression.finished(first, try first.run().get(), now: start)
        #expect(!compression.freeIdle(now: start + .seconds(19)))
        #expect(compression.freeIdle(now: start + .seconds(20)))
        compression.append(CompressionTests.logText(lines: 10), endMessage: true)
        guard case .deflate(let second) = try compression.next(now: start + .seconds(21)) else {
            Issue.record("no unit")
            return
        }
        #expect(second.resetContext)

        let inflation = InboundInflation(configuration: CompressionConfiguration())
        _ = try inflation.inflate(unit, resetContext: true, now: start)
        #expect(!inflation.freeIdle(now: start + .seconds(61), framesWaiting: true))
        #expect(inflation.freeIdle(now: start + .seconds(61), framesWaiting: false))
        #expect(throws: CompressionError.self) {
            try inflation.inflate(try second.run().get(), resetContext: false, now: start + .seconds(62))
        }
    }
}
