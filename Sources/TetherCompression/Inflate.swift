import CZlib
import NIOCore

/// Limits that turn a decompression bomb into a stream error (spec §9.4, §12).
public struct InflateLimits: Hashable, Sendable {
    /// Octets one COMPRESSED frame may inflate to (spec §9.3: senders put at most 65,536 in one).
    public var perFrame = 65_536
    /// Inflated octets per compressed octet over the stream.
    public var ratio = 1_024
    /// Inflated octets per stream.
    public var perStream: UInt64 = 1 << 30

    public init() {}
}

/// Compressed and inflated octets of one stream so far, for the per-stream limits (spec §9.4):
/// they count across every context the stream uses.
public struct InflateTotals: Hashable, Sendable {
    public var compressed: UInt64 = 0
    public var inflated: UInt64 = 0

    public init() {}
}

/// One direction's raw-DEFLATE decompressor with context takeover (spec §9.3): each COMPRESSED
/// payload gets `00 00 FF FF` back and is inflated into bounded output.
public final class Inflater {
    private var stream = z_stream()
    public let limits: InflateLimits
    /// The stream's totals, this context's octets included.
    public private(set) var totals: InflateTotals

    /// - Parameter totals: the stream's totals from its earlier contexts, when this one replaces
    ///   one (RESET_CONTEXT, or a context freed while idle): the per-stream limits keep counting.
    public init(limits: InflateLimits = InflateLimits(), totals: InflateTotals = InflateTotals()) throws(CompressionError) {
        self.limits = limits
        self.totals = totals
        // windowBits 15 accepts any window a sender may use (spec §9.3).
        let result = tether_inflateInit2(&self.stream, -15)
        guard result == Z_OK else { throw CompressionError(.zlib, "inflateInit2 failed (\(result))") }
    }

    deinit {
        inflateEnd(&self.stream)
    }

    /// Octets zlib produced in this context so far, including those of a frame that was refused
    /// for inflating too far: what a bomb cost before it was stopped.
    public var octetsProduced: UInt64 { UInt64(self.stream.total_out) }

    /// Inflates one COMPRESSED frame payload. Output is at most ``InflateLimits/perFrame`` + 1
    /// octets while it is produced: a frame that would inflate further is a bomb and fails.
    public func inflate(_ payload: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator())
        throws(CompressionError) -> ByteBuffer
    {
        var output = allocator.buffer(capacity: min(self.limits.perFrame + 1, max(4 * payload.readableBytes, 1_024)))
        try self.run(payload, into: &output)
        try self.run(ByteBuffer(bytes: syncTrailer), into: &output)
        self.totals.compressed += UInt64(payload.readableBytes)
        self.totals.inflated += UInt64(output.readableBytes)
        guard self.totals.inflated <= self.limits.perStream else {
            throw CompressionError(.limit, "the stream inflated past \(self.limits.perStream) octets")
        }
        guard self.totals.inflated <= UInt64(self.limits.ratio) * max(self.totals.compressed, 1) else {
            throw CompressionError(.limit, "the stream inflated more than \(self.limits.ratio) times its size")
        }
        return output
    }

    private func run(_ input: ByteBuffer, into output: inout ByteBuffer) throws(CompressionError) {
        var failure: CompressionError? = nil
        input.withUnsafeReadableBytes { source in
            self.stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
            self.stream.avail_in = uInt(source.count)
            while self.stream.avail_in > 0 && failure == nil {
                let room = self.limits.perFrame + 1 - output.readableBytes
                guard room > 0 else {
                    failure = CompressionError(.limit, "a frame inflated past \(self.limits.perFrame) octets")
                    break
                }
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: min(room, 16_384)) { destination in
                    let space = min(destination.count, room)
                    self.stream.next_out = destination.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    self.stream.avail_out = uInt(space)
                    let result = CZlib.inflate(&self.stream, Z_SYNC_FLUSH)
                    if result != Z_OK && result != Z_BUF_ERROR {
                        failure = CompressionError(.invalidData, "not valid DEFLATE data (\(result))")
                    } else if result == Z_BUF_ERROR && self.stream.avail_out > 0 && self.stream.avail_in > 0 {
                        failure = CompressionError(.invalidData, "DEFLATE data that makes no progress")
                    }
                    return space - Int(self.stream.avail_out)
                }
            }
        }
        self.stream.next_in = nil
        self.stream.next_out = nil
        if let failure { throw failure }
        if output.readableBytes > self.limits.perFrame {
            throw CompressionError(.limit, "a frame inflated past \(self.limits.perFrame) octets")
        }
    }
}

/// The one error type of the compression module. Every one is a stream error `COMPRESSION_ERROR`
/// (spec §9.4).
public struct CompressionError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        let name: String
        public static let zlib = Code(name: "zlib")
        public static let invalidData = Code(name: "invalidData")
        public static let limit = Code(name: "limit")
    }

    public let code: Code
    public let detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "compression \(self.code.name): \(self.detail)" }
}
