import NIOCore

/// A resumable frame decoder (spec §3.1, §4, §5): `append` bytes as they arrive, then call
/// ``nextFrame()`` until it returns nil.
///
/// It yields the same frames however the input is split. Payloads are slices of the appended
/// buffers, not copies; only a frame that straddles two appended buffers is copied, once. A
/// header announcing more than ``Limits/maxFramePayload`` is rejected before its payload is
/// buffered, so memory is bounded by what the caller appends.
public struct FrameDecoder: Sendable {
    /// What this endpoint is willing to receive: its own announced settings (spec §3.3).
    public struct Limits: Hashable, Sendable {
        public var maxFramePayload: Int
        public var maxOpenSize: Int

        public init(maxFramePayload: Int = Int(Settings.minMaxFramePayload), maxOpenSize: Int = 4_096) {
            self.maxFramePayload = maxFramePayload
            self.maxOpenSize = maxOpenSize
        }

        public init(_ settings: Settings) {
            self.init(maxFramePayload: Int(settings.maxFramePayload), maxOpenSize: Int(settings.maxOpenSize))
        }
    }

    private enum State: Sendable {
        case awaitingMagic
        case awaitingHeader
        case awaitingPayload(FrameHeader)
    }

    public var limits: Limits
    private var state: State
    /// The bytes being parsed.
    private var buffer = ByteBuffer()
    /// What `buffer` becomes once parsed to its end: empty, allocated once per decoder.
    private let released = ByteBuffer()
    /// Later appends, not yet needed.
    private var pending = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private var pendingBytes = 0

    /// - Parameter expectsPreface: whether the input starts with the preface magic (spec §3.1).
    public init(limits: Limits = Limits(), expectsPreface: Bool = false) {
        self.limits = limits
        self.state = expectsPreface ? .awaitingMagic : .awaitingHeader
    }

    /// Octets appended but not yet returned as frames.
    public var bufferedBytes: Int { self.buffer.readableBytes + self.pendingBytes }

    public mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        if self.buffer.readableBytes == 0 && self.pending.isEmpty {
            self.buffer = bytes
        } else {
            self.pending.append(bytes)
            self.pendingBytes += bytes.readableBytes
        }
    }

    /// The next complete frame, or nil when more bytes are needed.
    ///
    /// After an error the decoder's state is unspecified; the connection must end (spec §10.3).
    public mutating func nextFrame() throws(WireError) -> Frame? {
        while true {
            switch self.state {
            case .awaitingMagic:
                guard self.gather(Preface.magic.count) else { return nil }
                let magic = self.buffer.readBytes(length: Preface.magic.count)!
                guard magic == Preface.magic else {
                    throw WireError(.badPreface, "the connection does not start with the Tether magic")
                }
                self.state = .awaitingHeader
            case .awaitingHeader:
                guard self.gather(FrameHeader.size) else {
                    self.releaseIfEmpty()
                    return nil
                }
                let header = self.buffer.readFrameHeader()!
                guard header.length <= self.limits.maxFramePayload else {
                    throw WireError(
                        .frameTooLarge, "length \(header.length) exceeds MAX_FRAME_PAYLOAD \(self.limits.maxFramePayload)")
                }
                self.state = .awaitingPayload(header)
            case .awaitingPayload(let header):
                guard self.gather(header.length) else { return nil }
                let payload = self.buffer.readSlice(length: header.length)!
                self.state = .awaitingHeader
                return try FrameParser.parse(header, payload, limits: self.limits)
            }
        }
    }

    /// Lets go of a buffer whose every octet was parsed. The transport's read buffers are large
    /// (the TLS handler passes plaintext up in 64 KiB ones); kept here, an idle connection's last
    /// read would stay allocated until its next one — 64 KiB per idle edge on a hub.
    private mutating func releaseIfEmpty() {
        if self.buffer.readableBytes == 0 && self.buffer.capacity > 0 { self.buffer = self.released }
    }

    /// Makes `count` octets readable in `buffer`, pulling from `pending`. Returns false, copying
    /// nothing, while fewer than `count` octets have arrived in all.
    private mutating func gather(_ count: Int) -> Bool {
        if self.buffer.readableBytes >= count { return true }
        guard self.buffer.readableBytes + self.pendingBytes >= count else { return false }
        if self.buffer.readableBytes == 0 {
            // Common case: the previous buffer ended on a frame boundary.
            self.buffer = self.pending.removeFirst()
            self.pendingBytes -= self.buffer.readableBytes
            if self.buffer.readableBytes >= count { return true }
        }
        // The item straddles appended buffers: copy exactly its octets into one buffer.
        var joined = ByteBufferAllocator().buffer(capacity: count)
        joined.writeBuffer(&self.buffer)
        while joined.readableBytes < count {
            var next = self.pending.removeFirst()
            let take = min(count - joined.readableBytes, next.readableBytes)
            var part = next.readSlice(length: take)!
            joined.writeBuffer(&part)
            self.pendingBytes -= take
            if next.readableBytes > 0 {
                self.pending.prepend(next)
            }
        }
        // What follows the item stays in `pending`; `buffer` now holds exactly the item.
        self.buffer = joined
        return true
    }
}
