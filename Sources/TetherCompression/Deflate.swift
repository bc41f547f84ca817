import CZlib
import NIOCore

/// What deflate contexts cost and how hard they work (spec §9.3, §12).
public struct DeflateParameters: Hashable, Sendable {
    /// zlib level 1…9. Level 1 keeps one core above 80 MB/s on log text; see the README.
    public var level: Int32 = 1
    /// log2 of the sliding window: 13 is 8 KiB. Log lines repeat within a few KiB, and the window
    /// is most of a context's memory (spec §9.3 allows up to 15).
    public var windowBits: Int32 = 13
    /// zlib's hash memory, 1…9: 6 is 32 KiB.
    public var memLevel: Int32 = 6

    public init() {}

    /// Memory one compressor holds, per zlib's formula: window and hash, plus the state.
    public var compressorBytes: Int { (1 << (self.windowBits + 2)) + (1 << (self.memLevel + 9)) + 6_000 }
    /// Memory one decompressor holds: the window (up to 32 KiB, whatever the peer used) and the state.
    public static let decompressorBytes = (1 << 15) + 7_200
}

/// The four octets a sync flush ends with, which COMPRESSED frames leave out (spec §9.3).
let syncTrailer: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

/// One direction's raw-DEFLATE compressor with context takeover (spec §9.3). Each call to
/// ``compress(_:into:)`` produces one frame's payload: the input deflated and sync-flushed, the
/// trailing `00 00 FF FF` removed.
public final class Deflater {
    private var stream = z_stream()
    public let parameters: DeflateParameters
    /// Where zlib writes a unit (room for its worst case); its result is copied out at its size.
    private var scratch = ByteBuffer()

    public init(parameters: DeflateParameters = DeflateParameters()) throws(CompressionError) {
        self.parameters = parameters
        let result = tether_deflateInit2(&self.stream, parameters.level, -parameters.windowBits, parameters.memLevel)
        guard result == Z_OK else { throw CompressionError(.zlib, "deflateInit2 failed (\(result))") }
    }

    deinit {
        deflateEnd(&self.stream)
    }

    /// The most input that compresses into at most `payload` octets whatever the data (spec §9.3:
    /// a COMPRESSED frame is one whole sync-flushed unit, never split).
    public func maxInput(forPayload payload: Int) -> Int {
        // deflateBound, plus room for the sync flush's empty stored block (5 octets), less the
        // 4 trailer octets the frame leaves out.
        var low = 0
        var high = payload
        while low < high {
            let middle = (low + high + 1) / 2
            if Int(deflateBound(&self.stream, UInt(middle))) + 5 - syncTrailer.count <= payload {
                low = middle
            } else {
                high = middle - 1
            }
        }
        return low
    }

    /// Deflates `input` (at most ``maxInput(forPayload:)``) and appends the frame payload to
    /// `output`. Returns the octets appended.
    @discardableResult
    public func compress(_ input: ByteBuffer, into output: inout ByteBuffer) throws(CompressionError) -> Int {
        try self.compress(CollectionOfOne(input), into: &output)
    }

    /// Deflates the pieces of one unit as if they were one buffer — the application's writes as
    /// they came, never gathered into one (together at most ``maxInput(forPayload:)``) — and
    /// appends the frame payload to `output`. zlib works in a scratch buffer the deflater keeps;
    /// `output` only grows by what the unit became, so a queued unit holds its own size, not
    /// zlib's worst case. Returns the octets appended.
    @discardableResult
    public func compress(_ pieces: some Collection<ByteBuffer>, into output: inout ByteBuffer) throws(CompressionError) -> Int {
        let total = pieces.reduce(0) { $0 + $1.readableBytes }
        let bound = Int(deflateBound(&self.stream, UInt(total))) + 16
        self.scratch.clear()
        self.scratch.reserveCapacity(minimumWritableBytes: bound)
        var failure: Int32 = Z_OK
        var remaining = pieces.count
        for piece in pieces {
            remaining -= 1
            let flush = remaining == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH
            _ = piece.withUnsafeReadableBytes { source in
                self.scratch.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { destination in
                    self.stream.next_in = UnsafeMutablePointer(
                        mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
                    self.stream.avail_in = uInt(source.count)
                    self.stream.next_out = destination.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    self.stream.avail_out = uInt(destination.count)
                    let result = deflate(&self.stream, flush)
                    if result != Z_OK && result != Z_BUF_ERROR || self.stream.avail_in != 0 { failure = result }
                    return destination.count - Int(self.stream.avail_out)
                }
            }
            guard failure == Z_OK else { break }
        }
        self.stream.next_in = nil
        self.stream.next_out = nil
        guard failure == Z_OK else { throw CompressionError(.zlib, "deflate failed (\(failure))") }
        // Every sync flush ends with an empty stored block; the frame leaves it out.
        let payload = self.scratch.readableBytes - syncTrailer.count
        output.writeImmutableBuffer(self.scratch.getSlice(at: self.scratch.readerIndex, length: payload)!)
        return payload
    }
}
