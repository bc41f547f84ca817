import NIOCore
import TetherWire

/// The protocol state of one live stream (spec §6.3). Closed and reset streams are not here; they
/// move to ``ClosedStreams``.
struct StreamState: Sendable {
    /// The live rows of spec §6.3's state table. `idle`, `reset` and `closed` streams have no
    /// ``StreamState``.
    enum Phase: Sendable, Hashable {
        /// Both directions open.
        case open
        /// We sent FIN; the peer may still send.
        case halfClosedLocal
        /// The peer sent FIN; we may still send.
        case halfClosedRemote
    }

    let id: StreamID
    let streamClass: StreamClass
    let compression: CompressionAlgorithm
    let openedByPeer: Bool
    var phase: Phase = .open
    /// False for an inbound stream until the application accepts it (spec §6.2, open timeout).
    var accepted: Bool
    /// OPENED went (a stream the peer opened) or came (one we opened) (spec §5.8).
    var acknowledged = false
    var lastActivity: NIODeadline

    var send: SendWindow
    var outbound = OutboundQueue()
    /// Whether the stream is in the scheduler's queue or in the connection-blocked list.
    var isQueued = false

    var receive: ReceiveWindow
    /// The receive window's tuning epoch (spec §7.4).
    var epoch: WindowEpoch
    /// Whether a stream CREDIT is queued in the control queue.
    var creditQueued = false

    /// May the peer set COMPRESSED on this stream (spec §9.2)? The opener may whenever the stream has
    /// an algorithm; the acceptor only if the opener announced it, which for our own streams means us.
    func peerMayCompress(localAlgorithms: CompressionSet) -> Bool {
        self.compression != .none && (self.openedByPeer || localAlgorithms.contains(self.compression))
    }
}

/// What a stream has to send: the OPEN, buffered writes, the FIN (spec §5.1, §5.2, §7.2).
struct OutboundQueue: Sendable {
    struct Chunk: Sendable {
        var bytes: ByteBuffer
        /// The last octet of `bytes` ends a message (END_MSG).
        var endsMessage: Bool
        /// COMPRESSED (and RESET_CONTEXT) when this is a compressed unit, which goes whole in one
        /// frame (spec §9.3); empty for plain bytes.
        var compression: DataFrame.Flags = []
    }

    /// Frames smaller than this are filled from the following writes; larger ones go as they are.
    static let joinBelow = 4_096

    /// Allocated on the first write, so idle streams cost nothing here.
    private var chunks: CircularBuffer<Chunk>? = nil
    private(set) var bufferedBytes = 0
    var openPending = false
    /// FIN is to follow the buffered data; cleared once it is sent.
    var finRequested = false

    var hasData: Bool { !(self.chunks?.isEmpty ?? true) }

    /// Work that needs no credit: the OPEN, or a FIN with nothing before it.
    var hasCreditFreeWork: Bool { self.finRequested && !self.hasData }

    mutating func append(_ bytes: ByteBuffer, endsMessage: Bool, compression: DataFrame.Flags = []) {
        if self.chunks == nil { self.chunks = CircularBuffer(initialCapacity: 4) }
        self.chunks!.append(Chunk(bytes: bytes, endsMessage: endsMessage, compression: compression))
        self.bufferedBytes += bytes.readableBytes
    }

    /// The size of the first chunk when it is a compressed unit, which must go whole.
    var firstUnitSize: Int? {
        guard let first = self.chunks?.first, !first.compression.isEmpty else { return nil }
        return first.bytes.readableBytes
    }

    /// Octets the next frame needs at least: a whole compressed unit, or one octet.
    var nextFrameMinimum: Int { self.firstUnitSize ?? 1 }

    mutating func removeAll() {
        self.chunks = nil
        self.bufferedBytes = 0
    }

    /// Takes up to `limit` octets for one DATA frame. A frame never runs past the end of a message,
    /// so END_MSG stays exact; small chunks are joined (copied) up to the limit, large ones sliced.
    mutating func take(upTo limit: Int) -> (payload: ByteBuffer, endsMessage: Bool, compression: DataFrame.Flags) {
        precondition(limit > 0 && self.hasData)
        var first = self.chunks!.removeFirst()
        if !first.compression.isEmpty {
            // A compressed unit goes whole, alone (the caller checked it fits).
            precondition(first.bytes.readableBytes <= limit)
            self.bufferedBytes -= first.bytes.readableBytes
            return (first.bytes, first.endsMessage, first.compression)
        }
        if first.bytes.readableBytes > limit {
            let slice = first.bytes.readSlice(length: limit)!
            self.chunks!.prepend(first)
            self.bufferedBytes -= limit
            return (slice, false, [])
        }
        var payload = first.bytes
        var endsMessage = first.endsMessage
        // Join small writes that follow (copying them), up to the limit, stopping at a message end.
        while !endsMessage, payload.readableBytes < Self.joinBelow, let next = self.chunks!.first,
            next.compression.isEmpty, payload.readableBytes + next.bytes.readableBytes <= limit
        {
            var bytes = self.chunks!.removeFirst().bytes
            if next.bytes.readableBytes > 0 {
                payload.writeBuffer(&bytes)
            }
            endsMessage = next.endsMessage
        }
        self.bufferedBytes -= payload.readableBytes
        return (payload, endsMessage, [])
    }
}

/// The last ``SessionConfiguration/rememberedClosedStreams`` closed streams and how they ended, so a
/// late frame can be told from a protocol error (spec §6.3).
struct ClosedStreams: Sendable {
    enum Ending: Sendable, Hashable {
        /// We sent RESET: frames still in flight are discarded.
        case resetByUs
        /// The peer sent FIN or RESET: more DATA from it is STREAM_CLOSED.
        case closedByPeer
    }

    private var endings: [StreamID: Ending] = [:]
    private var order = CircularBuffer<StreamID>(initialCapacity: 16)
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    subscript(id: StreamID) -> Ending? { self.endings[id] }

    mutating func remember(_ id: StreamID, _ ending: Ending) {
        if self.endings.updateValue(ending, forKey: id) == nil {
            self.order.append(id)
            if self.order.count > self.capacity {
                self.endings.removeValue(forKey: self.order.removeFirst())
            }
        }
    }
}

extension Dictionary where Key == StreamID, Value == StreamState {
    /// Runs `body` on the stream state at `index`, in place. `Dictionary.Values`' getter copies
    /// the whole value — retaining every buffer it holds, and making the next append to one of
    /// them copy it — even to read a single field; its `_modify` accessor does not. The per-frame
    /// paths read and write stream state only through here.
    @inline(__always)
    mutating func inPlace<Result>(_ index: Index, _ body: (inout StreamState) -> Result) -> Result {
        body(&self.values[index])
    }
}
