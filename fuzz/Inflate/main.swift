// libFuzzer target: inflating COMPRESSED frames under the bomb limits (spec §9.3, §9.4). See
// fuzz/README.md.
//
// The first octet picks the limits; the rest is frames, each a 2-octet length and that many
// octets of raw DEFLATE (the sync trailer left out, as on the wire).
// Invariants: nothing traps; no frame yields more than the per-frame limit; the stream never
// yields more than the per-stream limit or the ratio allows; after a limit or invalid data is
// reported the stream is over (the caller resets it), so nothing is inflated past it.
import NIOCore
import TetherCompression

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInflate(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var limits = InflateLimits()
    limits.perFrame = input[0] & 1 == 0 ? 65_536 : 1_024
    limits.ratio = input[0] & 2 == 0 ? 1_024 : 4
    limits.perStream = input[0] & 4 == 0 ? 1 << 20 : 65_536
    guard let inflater = try? Inflater(limits: limits) else { preconditionFailure("inflateInit failed") }

    var index = 1
    var compressed = 0
    var inflated = 0
    while index + 2 <= size {
        let length = Int(input[index]) << 8 | Int(input[index + 1])
        index += 2
        let end = min(size, index + length)
        let frame = ByteBuffer(bytes: input[index..<end])
        index = end
        do {
            let output = try inflater.inflate(frame)
            compressed += frame.readableBytes
            inflated += output.readableBytes
            precondition(output.readableBytes <= limits.perFrame, "a frame inflated past the per-frame limit")
            precondition(UInt64(inflated) <= limits.perStream, "the stream inflated past its limit")
            precondition(inflated <= limits.ratio * max(compressed, 1), "the stream inflated past the ratio")
        } catch {
            return 0  // a stream error: the stream is reset and its context dropped
        }
    }
    return 0
}
