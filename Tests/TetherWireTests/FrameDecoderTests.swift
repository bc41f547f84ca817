import NIOCore
import TetherTestSupport
import TetherWire
import Testing

@Suite struct FrameDecoderTests {
    /// The preface followed by every frame vector: one multi-frame stream of bytes.
    static let stream: (bytes: [UInt8], frames: [Frame]) = {
        let vectors = try! Vectors.frames().filter { $0.bytes.readableBytes < 1_000 }
        var bytes = ByteBuffer()
        bytes.writePreface(Settings())
        var frames: [Frame] = [.settings(.values(Settings().entries))]
        for vector in vectors {
            var copy = vector.bytes
            bytes.writeBuffer(&copy)
            frames.append(vector.frame)
        }
        return (Array(bytes.readableBytesView), frames)
    }()

    private static func decodeAll(_ pieces: [ArraySlice<UInt8>]) throws -> [Frame] {
        var decoder = FrameDecoder(expectsPreface: true)
        var frames: [Frame] = []
        for piece in pieces {
            decoder.append(ByteBuffer(bytes: piece))
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        #expect(decoder.bufferedBytes == 0)
        return frames
    }

    /// spec §4: the same frames however the input is split — at every split point.
    @Test func everySplitPointYieldsTheSameFrames() throws {
        let (bytes, expected) = Self.stream
        for split in 0...bytes.count {
            let frames = try Self.decodeAll([bytes[..<split], bytes[split...]])
            #expect(frames == expected, "split at \(split)")
        }
    }

    @Test func oneOctetAtATimeYieldsTheSameFrames() throws {
        let (bytes, expected) = Self.stream
        let frames = try Self.decodeAll(bytes.indices.map { bytes[$0..<$0 + 1] })
        #expect(frames == expected)
    }

    @Test func appendsBeforeAnyNextFrameYieldTheSameFrames() throws {
        let (bytes, expected) = Self.stream
        var decoder = FrameDecoder(expectsPreface: true)
        for start in stride(from: 0, to: bytes.count, by: 7) {
            decoder.append(ByteBuffer(bytes: bytes[start..<min(start + 7, bytes.count)]))
        }
        var frames: [Frame] = []
        while let frame = try decoder.nextFrame() { frames.append(frame) }
        #expect(frames == expected)
    }

    /// Payloads are slices of the appended buffer, not copies.
    @Test func dataPayloadIsASliceOfTheInput() throws {
        var input = ByteBuffer()
        let payload = ByteBuffer(repeating: 0xAB, count: 16_375)
        input.writeFrame(.data(DataFrame(streamID: 1, payload: payload)))
        input.writeFrame(.data(DataFrame(streamID: 3, payload: payload)))
        var decoder = FrameDecoder()
        decoder.append(input)
        let inputRange = input.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress!)..<UInt(bitPattern: $0.baseAddress! + $0.count) }
        for _ in 0..<2 {
            guard case .data(let frame) = try decoder.nextFrame() else {
                Issue.record("expected DATA")
                return
            }
            let start = frame.payload.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress!) }
            #expect(inputRange.contains(start))
        }
    }

    /// A frame split across two reads is copied once, and the next frame is a slice again.
    @Test func onlyTheStraddlingFrameIsCopied() throws {
        var first = ByteBuffer()
        first.writeFrame(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 1, count: 100))))
        var second = ByteBuffer()
        second.writeFrame(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 2, count: 100))))
        let split = first.readableBytes - 50
        let head = first.getSlice(at: 0, length: split)!
        var tail = first.getSlice(at: split, length: 50)!
        tail.writeBuffer(&second)
        var decoder = FrameDecoder()
        decoder.append(head)
        #expect(try decoder.nextFrame() == nil)
        decoder.append(tail)
        _ = try decoder.nextFrame()
        guard case .data(let frame) = try decoder.nextFrame() else {
            Issue.record("expected DATA")
            return
        }
        let tailRange = tail.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress!)..<UInt(bitPattern: $0.baseAddress! + $0.count) }
        #expect(tailRange.contains(frame.payload.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress!) }))
    }

    /// Once every octet of a read was parsed, the decoder keeps none of it: the transport's read
    /// buffers are 64 KiB, and a hub holding each idle edge's last one paid 64 KiB per edge
    /// (README "Fleet scale").
    @Test func aParsedReadIsLetGo() throws {
        var read = ByteBufferAllocator().buffer(capacity: 65_536)
        read.writeFrame(.ping(PingFrame(ack: false, opaque: 7)))
        read.writeFrame(.ping(PingFrame(ack: true, opaque: 8)))
        var decoder = FrameDecoder()
        decoder.append(read)
        var frames = 0
        while try decoder.nextFrame() != nil { frames += 1 }
        #expect(frames == 2)
        #expect(read.modifyIfUniquelyOwned { _ in true } == true, "the decoder still holds the read's storage")
    }

    /// spec §4.2: a too-long header is rejected before any payload arrives.
    @Test func oversizedLengthIsRejectedFromTheHeaderAlone() {
        var header = ByteBuffer()
        header.writeFrameHeader(FrameHeader(length: 0xFF_FFFF, type: .data, flags: 0, streamID: 1))
        var decoder = FrameDecoder()
        decoder.append(header)
        #expect(throws: WireError.self) { try decoder.nextFrame() }
    }

    @Test func limitsFollowTheAnnouncedSettings() throws {
        var settings = Settings()
        settings.maxFramePayload = 65_536
        var input = ByteBuffer()
        input.writeFrame(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 0, count: 65_536))))
        var strict = FrameDecoder()
        strict.append(input)
        #expect(throws: WireError.self) { try strict.nextFrame() }
        var relaxed = FrameDecoder(limits: .init(settings))
        relaxed.append(input)
        #expect(try relaxed.nextFrame() != nil)
    }

    /// Random input never traps; whatever decodes re-encodes to a frame that decodes the same.
    @Test func randomInputNeverTraps() throws {
        var generator = SplitMix64(seed: 0x7e7e)
        for _ in 0..<20_000 {
            let count = Int(generator.next() % 64)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if count > 3 { bytes[0] = 0; bytes[1] = 0 }  // keep lengths small so payloads complete
            var decoder = FrameDecoder()
            decoder.append(ByteBuffer(bytes: bytes))
            while let frame = try? decoder.nextFrame() {
                var encoded = ByteBuffer()
                encoded.writeFrame(frame)
                var again = FrameDecoder()
                again.append(encoded)
                #expect(try again.nextFrame() == frame)
            }
        }
    }
}

/// A small deterministic generator for tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
