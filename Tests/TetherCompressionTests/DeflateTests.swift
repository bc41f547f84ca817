import NIOCore
import TetherCompression
import Testing

/// spec §9.3, §9.4 on the zlib contexts themselves.
@Suite struct DeflateTests {
    static func logText(_ lines: Int) -> ByteBuffer {
        var text = ""
        for index in 0..<lines {
            text += "Nov 27 00:00:\(10 + index % 50) node-1 kubelet[1234]: I1127 pod_workers.go:\(900 + index % 97)] "
            text += "\"SyncLoop (PLEG): event for pod\" pod=\"default/web-\(index % 7)\" event=ContainerStarted\n"
        }
        return ByteBuffer(string: text)
    }

    /// The default (8 KiB window, memLevel 6), zlib's own, and extremes.
    @Test(arguments: [(Int32(13), Int32(6)), (15, 8), (15, 9), (9, 1)])
    func framesRoundTripWithContextTakeover(_ windowBits: Int32, _ memLevel: Int32) throws {
        var parameters = DeflateParameters()
        parameters.windowBits = windowBits
        parameters.memLevel = memLevel
        let deflater = try Deflater(parameters: parameters)
        let inflater = try Inflater()
        var text = Self.logText(2_000)
        var wire = 0
        var plain = 0
        while text.readableBytes > 0 {
            let input = text.readSlice(length: min(text.readableBytes, deflater.maxInput(forPayload: 16_375)))!
            var payload = ByteBuffer()
            try deflater.compress(input, into: &payload)
            #expect(payload.readableBytes <= 16_375)
            // The sync flush's 00 00 FF FF is left out (spec §9.3).
            #expect(payload.getBytes(at: payload.writerIndex - 4, length: 4) != [0, 0, 0xFF, 0xFF])
            #expect(try inflater.inflate(payload) == input)
            wire += payload.readableBytes
            plain += input.readableBytes
        }
        #expect(Double(plain) / Double(wire) > 3, "windowBits \(windowBits) memLevel \(memLevel)")  // log text compresses
    }

    /// A unit deflated from the pieces it was written in is the unit deflated whole: the same
    /// octets on the wire, so the stream never has to copy writes together (spec §9.3).
    @Test func aUnitInPiecesDeflatesAsTheWholeUnit() throws {
        let pieced = try Deflater()
        let whole = try Deflater()
        let inflater = try Inflater()
        var text = Self.logText(600)
        while text.readableBytes > 0 {
            let unit = text.readSlice(length: min(text.readableBytes, whole.maxInput(forPayload: 16_375)))!
            var pieces: [ByteBuffer] = []
            var rest = unit
            for size in [1, 4_096, 17, 4_096] where rest.readableBytes > 0 {
                pieces.append(rest.readSlice(length: min(size, rest.readableBytes))!)
            }
            if rest.readableBytes > 0 { pieces.append(rest) }
            var fromPieces = ByteBuffer()
            var fromWhole = ByteBuffer()
            try pieced.compress(pieces, into: &fromPieces)
            try whole.compress(unit, into: &fromWhole)
            #expect(fromPieces == fromWhole)
            #expect(try inflater.inflate(fromPieces) == unit)
        }
    }

    /// What a unit becomes is all its buffer holds: a queued unit costs its size, not zlib's worst
    /// case for its input (before, every 16 KiB unit of log text sat in a 32 KiB buffer).
    @Test func aUnitHoldsItsOwnSize() throws {
        let deflater = try Deflater()
        var payload = ByteBuffer()
        let input = Self.logText(200).getSlice(at: 0, length: deflater.maxInput(forPayload: 16_375))!
        try deflater.compress(input, into: &payload)
        #expect(payload.readableBytes < input.readableBytes / 3)
        #expect(payload.capacity <= 2 * payload.readableBytes, "\(payload.capacity) for \(payload.readableBytes)")
    }

    @Test func maxInputAlwaysFitsTheFrameEvenForRandomData() throws {
        let deflater = try Deflater()
        var random = SystemRandomNumberGenerator()
        for payload in [16_375, 4_096, 1_000] {
            let length = deflater.maxInput(forPayload: payload)
            #expect(length > payload * 8 / 10)  // deflateBound is conservative for small windows
            let input = ByteBuffer(bytes: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) })
            var output = ByteBuffer()
            try deflater.compress(input, into: &output)
            #expect(output.readableBytes <= payload)
        }
    }

    @Test func aFrameThatInflatesPastTheLimitIsRefusedWithoutInflatingIt() throws {
        // A few KiB that would inflate to 4 MiB.
        let bomber = try Deflater(parameters: { var p = DeflateParameters(); p.level = 9; return p }())
        var bomb = ByteBuffer()
        try bomber.compress(ByteBuffer(repeating: 0, count: 4 << 20), into: &bomb)
        #expect(bomb.readableBytes < 8_192)
        let inflater = try Inflater()
        let thrown = #expect(throws: CompressionError.self) { try inflater.inflate(bomb) }
        #expect(thrown?.code == .limit)
        // zlib stopped one octet past the frame limit: the other 4 MiB were never made.
        #expect(inflater.octetsProduced == UInt64(InflateLimits().perFrame + 1))
    }

    @Test func theStreamLimitsCountAcrossFrames() throws {
        var limits = InflateLimits()
        limits.perStream = 1 << 20
        let deflater = try Deflater(parameters: { var p = DeflateParameters(); p.level = 9; return p }())
        let inflater = try Inflater(limits: limits)
        var inflated = 0
        let thrown = #expect(throws: CompressionError.self) {
            for _ in 0..<64 {
                var payload = ByteBuffer()
                try deflater.compress(ByteBuffer(repeating: 0, count: 65_536), into: &payload)
                inflated += try inflater.inflate(payload).readableBytes
            }
        }
        #expect(thrown?.code == .limit)
        #expect(inflated == 1 << 20)  // sixteen frames of 64 KiB, then the seventeenth trips it
    }

    @Test func garbageIsInvalidData() throws {
        let inflater = try Inflater()
        let thrown = #expect(throws: CompressionError.self) {
            try inflater.inflate(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x13]))
        }
        #expect(thrown?.code == .invalidData)
    }

    @Test func aResetContextCarriesTheStreamTotals() throws {
        var limits = InflateLimits()
        limits.perStream = 100_000
        let first = try Inflater(limits: limits)
        let deflater = try Deflater()
        var payload = ByteBuffer()
        try deflater.compress(ByteBuffer(repeating: 7, count: 60_000), into: &payload)
        _ = try first.inflate(payload)
        let second = try Inflater(limits: limits, totals: first.totals)
        let fresh = try Deflater()
        var again = ByteBuffer()
        try fresh.compress(ByteBuffer(repeating: 7, count: 60_000), into: &again)
        #expect(throws: CompressionError.self) { try second.inflate(again) }
    }
}
