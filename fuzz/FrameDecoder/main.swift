// libFuzzer target: the frame decoder (spec §4–§5). See fuzz/README.md.
//
// The first input octet picks where the rest is split into appends; the rest is the wire input.
// Invariants: decoding never traps; a split input decodes to the same frames and the same error
// as the whole; every decoded frame re-encodes to octets that decode to the same frame.
import NIOCore
import TetherWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let stride = Int(input[0]) + 1
    let wire = ByteBuffer(bytes: input.dropFirst())
    let expectsPreface = input[0] & 0x80 != 0

    let whole = decode([wire], expectsPreface: expectsPreface)
    var pieces: [ByteBuffer] = []
    var start = 0
    while start < wire.readableBytes {
        let length = min(stride, wire.readableBytes - start)
        pieces.append(wire.getSlice(at: wire.readerIndex + start, length: length)!)
        start += length
    }
    let split = decode(pieces, expectsPreface: expectsPreface)
    precondition(whole.frames == split.frames, "split input decoded differently")
    precondition(whole.error == split.error, "split input failed differently")

    for frame in whole.frames {
        var encoded = ByteBuffer()
        encoded.writeFrame(frame)
        var decoder = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF))
        decoder.append(encoded)
        let again = try? decoder.nextFrame()
        precondition(again == frame, "frame did not survive encode → decode")
    }
    return 0
}

private func decode(_ pieces: [ByteBuffer], expectsPreface: Bool) -> (frames: [Frame], error: WireError?) {
    var decoder = FrameDecoder(expectsPreface: expectsPreface)
    var frames: [Frame] = []
    do {
        for piece in pieces {
            decoder.append(piece)
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        return (frames, nil)
    } catch {
        return (frames, error)
    }
}
