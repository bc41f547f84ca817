import NIOCore

/// A frame type (spec §5). Unknown types are carried as ``Frame/unknown(_:)``.
public struct FrameType: Hashable, Sendable, RawRepresentable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let data = FrameType(rawValue: 0x0)
    public static let open = FrameType(rawValue: 0x1)
    public static let reset = FrameType(rawValue: 0x2)
    public static let credit = FrameType(rawValue: 0x3)
    public static let settings = FrameType(rawValue: 0x4)
    public static let ping = FrameType(rawValue: 0x5)
    public static let goAway = FrameType(rawValue: 0x6)
    public static let opened = FrameType(rawValue: 0x7)
}

/// One decoded frame (spec §5). Each case holds exactly what its type carries; a DATA frame on
/// stream 0 or a PING on a stream cannot be represented.
public enum Frame: Hashable, Sendable {
    case data(DataFrame)
    case open(OpenFrame)
    case reset(ResetFrame)
    case credit(CreditFrame)
    case settings(SettingsFrame)
    case ping(PingFrame)
    case goAway(GoAwayFrame)
    /// OPENED (spec §5.8): the receiver of the stream's OPEN accepted it and reached what it names.
    case opened(StreamID)
    /// A frame of a type this version does not define: ignored and counted (spec §4.1).
    case unknown(UnknownFrame)

    /// The stream the frame belongs to; ``StreamID/connection`` for connection frames.
    public var streamID: StreamID {
        switch self {
        case .data(let frame): frame.streamID
        case .open(let frame): frame.streamID
        case .reset(let frame): frame.streamID
        case .credit(let frame): frame.streamID
        case .opened(let streamID): streamID
        case .settings, .ping, .goAway: .connection
        case .unknown(let frame): frame.streamID
        }
    }
}

/// DATA (spec §5.1): stream bytes.
public struct DataFrame: Hashable, Sendable {
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// The last frame the sender sends on this stream (half-close, spec §6.4).
        public static let fin = Flags(rawValue: 0x1)
        /// These octets end a message.
        public static let endMessage = Flags(rawValue: 0x2)
        /// The payload is compressed with the stream's algorithm (spec §9).
        public static let compressed = Flags(rawValue: 0x4)
        /// With COMPRESSED: this frame starts a new compression context (spec §9.3).
        public static let resetContext = Flags(rawValue: 0x8)

        /// Every flag spec §5.1 defines.
        public static let defined: Flags = [.fin, .endMessage, .compressed, .resetContext]
    }

    public var streamID: StreamID
    public var flags: Flags
    /// A slice of the received bytes, not a copy.
    public var payload: ByteBuffer

    public init(streamID: StreamID, flags: Flags = [], payload: ByteBuffer) {
        precondition(!streamID.isConnection, "DATA never uses stream 0 (spec §4.3)")
        self.streamID = streamID
        self.flags = flags
        self.payload = payload
    }
}

/// OPEN (spec §5.2): opens a stream toward a named service.
public struct OpenFrame: Hashable, Sendable {
    public var streamID: StreamID
    public var streamClass: StreamClass
    public var compression: CompressionAlgorithm
    /// 1–255 octets of `[A-Za-z0-9._:/@+-]`.
    public var service: String
    public var metadata: OpenMetadata

    public init(
        streamID: StreamID,
        streamClass: StreamClass,
        compression: CompressionAlgorithm = .none,
        service: String,
        metadata: OpenMetadata = OpenMetadata()
    ) {
        precondition(!streamID.isConnection, "OPEN never uses stream 0 (spec §4.3)")
        self.streamID = streamID
        self.streamClass = streamClass
        self.compression = compression
        self.service = service
        self.metadata = metadata
    }
}

/// The small key/value metadata of an OPEN (spec §5.2), in wire order, keys unique.
public struct OpenMetadata: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        /// 1–64 octets of `[a-z0-9._-]`.
        public var key: String
        /// 0–65,535 arbitrary octets.
        public var value: ByteBuffer

        public init(key: String, value: ByteBuffer) {
            self.key = key
            self.value = value
        }
    }

    public private(set) var entries: [Entry]

    /// `tether.user`: the plane user on whose behalf an acceptor opens a stream (spec §5.2.1).
    /// Only acceptors send it; a receiving edge audits it with every stream the plane opens.
    public static let userKey = "tether.user"

    public init() {
        self.entries = []
    }

    /// Entries in order. Keys must be unique; a repeated key replaces the earlier value.
    public init(_ entries: [Entry]) {
        self.entries = []
        for entry in entries { self[entry.key] = entry.value }
    }

    public subscript(key: String) -> ByteBuffer? {
        get { self.entries.first(where: { $0.key == key })?.value }
        set {
            if let index = self.entries.firstIndex(where: { $0.key == key }) {
                if let newValue { self.entries[index].value = newValue } else { self.entries.remove(at: index) }
            } else if let newValue {
                self.entries.append(Entry(key: key, value: newValue))
            }
        }
    }

    public var isEmpty: Bool { self.entries.isEmpty }
}

/// RESET (spec §5.3): ends a stream in both directions.
public struct ResetFrame: Hashable, Sendable {
    public var streamID: StreamID
    public var code: ErrorCode
    /// DATA payload octets the sender of the RESET sent on the stream.
    public var finalSize: UInt64

    public init(streamID: StreamID, code: ErrorCode, finalSize: UInt64) {
        precondition(!streamID.isConnection, "RESET never uses stream 0 (spec §4.3)")
        self.streamID = streamID
        self.code = code
        self.finalSize = finalSize
    }
}

/// CREDIT (spec §5.4): raises a flow-control limit, always as an absolute value.
public enum CreditFrame: Hashable, Sendable {
    /// The peer may send DATA on `stream` up to absolute offset `limit`.
    case stream(StreamID, limit: UInt64)
    /// The peer may send connection DATA up to absolute offset `limit`.
    case connection(limit: UInt64)
    /// The peer may open `count` streams of the class in total (cumulative).
    case streams(StreamClass, count: UInt32)

    /// The largest limit a CREDIT may carry: 2⁶²−1 (spec §5.4).
    public static let maxLimit: UInt64 = (1 << 62) - 1

    public var streamID: StreamID {
        if case .stream(let id, _) = self { return id }
        return .connection
    }
}

/// SETTINGS (spec §3.3, §5.5).
public enum SettingsFrame: Hashable, Sendable {
    /// The sender's settings, in wire order (unknown ids kept).
    case values([Setting])
    /// Acknowledges the peer's SETTINGS.
    case ack
}

/// PING (spec §5.6).
public struct PingFrame: Hashable, Sendable {
    public var ack: Bool
    public var opaque: UInt64

    public init(ack: Bool, opaque: UInt64) {
        self.ack = ack
        self.opaque = opaque
    }
}

/// GOAWAY (spec §5.7): starts the end of the connection.
public struct GoAwayFrame: Hashable, Sendable {
    public var lastStreamID: StreamID
    public var code: ErrorCode
    /// At most ``maxDebugLength`` octets of UTF-8.
    public var debug: String

    public static let maxDebugLength = 256

    public init(lastStreamID: StreamID, code: ErrorCode, debug: String = "") {
        self.lastStreamID = lastStreamID
        self.code = code
        self.debug = debug
    }
}

/// A frame of an unknown type, kept for counting and for byte-exact re-encoding (spec §4.1).
public struct UnknownFrame: Hashable, Sendable {
    public var type: FrameType
    public var flags: UInt8
    public var streamID: StreamID
    public var payload: ByteBuffer

    public init(type: FrameType, flags: UInt8, streamID: StreamID, payload: ByteBuffer) {
        self.type = type
        self.flags = flags
        self.streamID = streamID
        self.payload = payload
    }
}
