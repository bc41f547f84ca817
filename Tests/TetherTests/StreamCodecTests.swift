import NIOCore
import Tether
import TetherCompression
import Testing

/// spec §9.2–9.3 at the codec: batching into full units, the raw fallback, and round trips
/// through the reader's side, for the default and zlib's own window sizes.
@Suite struct StreamCodecTests {
    static let maxUnit = 16_375

    /// Writes `text` in `piece`-octet writes, then flushes; returns the units in order.
    static func units(_ text: ByteBuffer, piece: Int, codec: StreamCodec) throws -> [StreamCodec.Unit] {
        var input = text
        var units: [StreamCodec.Unit] = []
        while input.readableBytes > 0 {
            let slice = input.readSlice(length: min(piece, input.readableBytes))!
            try codec.write(slice, maxUnit: Self.maxUnit, now: .now()) { units += $0 }
        }
        try codec.write(nil, maxUnit: Self.maxUnit, now: .now()) { units += $0 }
        return units
    }

    static func inflateAll(_ units: [StreamCodec.Unit]) throws -> ByteBuffer {
        let reader = StreamCodec()
        var output = ByteBuffer()
        for unit in units {
            var plain = unit.compressed ? try reader.inflate(unit.bytes, resetContext: unit.resetContext, now: .now()) : unit.bytes
            output.writeBuffer(&plain)
        }
        return output
    }

    @Test(arguments: [(Int32(13), Int32(6)), (15, 8)])
    func logTextInSmallWritesStaysCompressedInFullUnits(_ windowBits: Int32, _ memLevel: Int32) throws {
        var configuration = StreamCodec.Configuration()
        configuration.deflate.windowBits = windowBits
        configuration.deflate.memLevel = memLevel
        let text = CompressionTests.logText(lines: 4_000)
        let units = try Self.units(text, piece: 4_096, codec: StreamCodec(configuration: configuration))
        #expect(try Self.inflateAll(units) == text)
        #expect(units.allSatisfy { $0.compressed }, "a tail unit must not trip the raw fallback")
        #expect(units.dropLast().allSatisfy { $0.bytes.readableBytes <= Self.maxUnit })
        let wire = units.reduce(0) { $0 + $1.bytes.readableBytes }
        #expect(wire * 3 < text.readableBytes, "\(wire) octets for \(text.readableBytes)")
    }

    @Test func aTailShorterThanAUnitWaitsForTheFlush() throws {
        let codec = StreamCodec()
        let text = CompressionTests.logText(lines: 400)  // about 50 KiB
        var early: [StreamCodec.Unit] = []
        try codec.write(text, maxUnit: Self.maxUnit, now: .now()) { early = $0 }
        #expect(!early.isEmpty)
        #expect(codec.needsFlushTimer(), "the tail waits, and a flush is due")
        var late: [StreamCodec.Unit] = []
        try codec.write(nil, maxUnit: Self.maxUnit, now: .now()) { late = $0 }
        #expect(late.count == 1)
        #expect(try Self.inflateAll(early + late) == text)
    }

    @Test func aMessageEndSendsEverythingAndMarksTheLastUnit() throws {
        let codec = StreamCodec()
        let text = CompressionTests.logText(lines: 10)
        var units: [StreamCodec.Unit] = []
        try codec.write(text, endMessage: true, maxUnit: Self.maxUnit, now: .now()) { units = $0 }
        #expect(units.count == 1)
        #expect(units.last?.endsMessage == true)
        #expect(!codec.needsFlushTimer())
    }

    @Test func incompressibleDataGoesRawAfterOneProbe() throws {
        let payload = randomPayload(count: 1 << 20, seed: 9)
        let units = try Self.units(payload, piece: 16_384, codec: StreamCodec())
        #expect(try Self.inflateAll(units) == payload)
        #expect(units.first?.compressed == true)
        #expect(units.dropFirst().allSatisfy { !$0.compressed })
    }
}
