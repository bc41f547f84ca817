import NIOCore
import TetherWire

/// A stream the peer opened (spec §5.2, §6.2). The application accepts or refuses it.
public struct InboundStream: Hashable, Sendable {
    public var id: StreamID
    public var streamClass: StreamClass
    public var service: String
    public var metadata: OpenMetadata
    public var compression: CompressionAlgorithm

    public init(
        id: StreamID, streamClass: StreamClass, service: String, metadata: OpenMetadata, compression: CompressionAlgorithm
    ) {
        self.id = id
        self.streamClass = streamClass
        self.service = service
        self.metadata = metadata
        self.compression = compression
    }
}

/// Something the application must learn of. Session methods return these; they never call out.
public enum SessionEvent: Hashable, Sendable {
    /// The peer's SETTINGS were accepted; streams may be opened (spec §3.2).
    case ready(peer: Settings)
    /// The peer opened a stream (spec §6.2).
    case opened(InboundStream)
    /// The peer acknowledged a stream we opened: it accepted it and reached what it names (spec §5.8).
    case acknowledged(StreamID)
    /// Octets for a stream, with its FIN / END_MSG / COMPRESSED flags (spec §5.1).
    case data(StreamID, ByteBuffer, DataFrame.Flags)
    /// A stream ended abruptly: the peer's RESET, a stream error, a timeout, or refused by GOAWAY (spec §6.5).
    case reset(StreamID, ErrorCode)
    /// The peer sent GOAWAY (spec §10.2).
    case goAway(GoAwayFrame)
    /// The peer raised a class's stream-count credit after it had run out (spec §7.3).
    case streamCredit(StreamClass)
    /// The ACK of a PING the application sent with ``Session/ping(now:)``, and its round trip (spec §5.6).
    case pong(UInt64, rtt: TimeAmount)
    /// A connection error: the session is closed; a GOAWAY reporting it is queued (spec §10.3).
    case connectionError(ErrorCode, String)
}

/// Zero, one or several events, without allocating for the common zero and one.
public struct SessionEvents: Sequence, Sendable {
    @usableFromInline
    enum Storage: Sendable {
        case none
        case one(SessionEvent)
        case many([SessionEvent])
    }

    @usableFromInline
    var storage: Storage

    public init() {
        self.storage = .none
    }

    public init(_ event: SessionEvent) {
        self.storage = .one(event)
    }

    public static var none: SessionEvents { SessionEvents() }

    mutating func append(_ event: SessionEvent) {
        switch self.storage {
        case .none: self.storage = .one(event)
        case .one(let first): self.storage = .many([first, event])
        case .many(var events):
            self.storage = .none
            events.append(event)
            self.storage = .many(events)
        }
    }

    mutating func append(contentsOf other: SessionEvents) {
        for event in other { self.append(event) }
    }

    public var isEmpty: Bool {
        if case .none = self.storage { return true }
        return false
    }

    public func makeIterator() -> Iterator {
        Iterator(storage: self.storage)
    }

    public struct Iterator: IteratorProtocol {
        var storage: Storage
        var index = 0

        public mutating func next() -> SessionEvent? {
            defer { self.index += 1 }
            switch self.storage {
            case .none: return nil
            case .one(let event): return self.index == 0 ? event : nil
            case .many(let events): return self.index < events.count ? events[self.index] : nil
            }
        }
    }
}

/// Why ``Session/openStream(_:service:metadata:compression:now:)`` could not open a stream.
public enum OpenError: Error, Hashable, Sendable {
    /// The peer's SETTINGS have not arrived yet (spec §3.1).
    case notReady
    /// The class's stream-count credit is used up; wait for ``SessionEvent/streamCredit(_:)`` (spec §7.3).
    case noCredit
    /// A GOAWAY was sent or received, or no stream id is left (spec §6.1, §10.2).
    case draining
    /// The peer cannot decompress the algorithm (spec §9.2).
    case compressionUnsupported
    /// The service name or metadata break spec §5.2.
    case invalid(WireError)
    /// The connection has failed.
    case closed
}

/// Why a write or half-close was not taken.
public enum StreamWriteError: Error, Hashable, Sendable {
    /// The stream is reset, closed, or this side already sent FIN.
    case closed
    /// The stream has no compression this side may use, or the unit is empty or too large (spec §9.2).
    case compressionNotAllowed
}
