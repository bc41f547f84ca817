/// A stream identifier (spec §4.1, §6.1).
///
/// Stream 0 is the connection itself. The dialer opens odd ids, the acceptor even ids, each
/// strictly increasing and never reused.
public struct StreamID: Hashable, Comparable, Sendable {
    public var rawValue: UInt32

    @inlinable
    public init(_ rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// The connection: frames on stream 0 concern the whole connection (spec §4.3).
    public static let connection = StreamID(0)

    /// The highest id the dialer may use (spec §6.1).
    public static let maxDialer = StreamID(0xFFFF_FFFF)
    /// The highest id the acceptor may use (spec §6.1).
    public static let maxAcceptor = StreamID(0xFFFF_FFFE)

    @inlinable
    public var isConnection: Bool { self.rawValue == 0 }

    /// Whether the dialer (odd ids) opened this stream.
    @inlinable
    public var isDialerInitiated: Bool { self.rawValue & 1 == 1 }

    @inlinable
    public static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        lhs.rawValue < rhs.rawValue
    }
}

extension StreamID: CustomStringConvertible {
    public var description: String { String(self.rawValue) }
}

extension StreamID: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: UInt32) {
        self.init(value)
    }
}
