import NIOCore
import TetherWire

/// The PROXY protocol version 2 header the hub writes first on every backend connection
/// (spec/RELAYS.md §2): the edge's address as the hub saw it, the hub's own end of that
/// connection, and the stream's verified facts in TLVs of the custom range — tenant and agent id
/// (from the edge's certificate), service and class (from the OPEN). Only an encoder: the hub never
/// reads one.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +---------------------------------------------------------------+
/// |          signature 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A         |
/// +---------------+---------------+-------------------------------+
/// |  0x21 v2 PROXY| family|proto  |     length of what follows    |
/// +---------------+---------------+-------------------------------+
/// | addresses: IPv4 4+4+2+2, IPv6 16+16+2+2 (source, dest, ports) |
/// +---------------+-------------------------------+---------------+
/// | TLV type (1)  |         TLV length (2)        | value …       |
/// +---------------+-------------------------------+---------------+
/// ```
public struct ProxyHeader: Sendable {
    /// TLV types (spec/RELAYS.md §2), in the range the PROXY protocol leaves to applications.
    public enum TLV {
        public static let tenant: UInt8 = 0xE0
        public static let agent: UInt8 = 0xE1
        public static let service: UInt8 = 0xE2
        public static let streamClass: UInt8 = 0xE3
        /// The standard `PP2_TYPE_UNIQUE_ID`: hub instance, connection and stream, for matching logs.
        public static let uniqueID: UInt8 = 0x05
    }

    /// One TLV: its type and its value (at most 65,535 octets; ours are names, far shorter).
    public struct Field: Sendable, Hashable {
        public var type: UInt8
        public var value: [UInt8]

        public init(_ type: UInt8, _ value: String) {
            self.type = type
            self.value = Array(value.utf8)
        }
    }

    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    public var source: SocketAddress?
    public var destination: SocketAddress?
    public var tlvs: [Field]

    public init(source: SocketAddress?, destination: SocketAddress?, tlvs: [Field]) {
        self.source = source
        self.destination = destination
        self.tlvs = tlvs
    }

    /// The header for one stream an edge opened: its identity, service and class.
    public init(
        stream identity: TetherIdentity, service: String, streamClass: StreamClass, uniqueID: String,
        source: SocketAddress?, destination: SocketAddress?
    ) {
        self.init(
            source: source, destination: destination,
            tlvs: [
                Field(TLV.tenant, identity.tenant), Field(TLV.agent, identity.agentID),
                Field(TLV.service, service), Field(TLV.streamClass, streamClass.name.lowercased()),
                Field(TLV.uniqueID, String(uniqueID.prefix(128))),
            ])
    }

    /// The header's octets. Two TCP addresses of one family are sent as they are (`PROXY`, TCP over
    /// IPv4 or IPv6); otherwise the family is `AF_UNSPEC` with no addresses, and the TLVs still follow.
    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeBytes(Self.signature)
        buffer.writeInteger(UInt8(0x21))  // version 2, command PROXY
        let addresses = Self.addressBlock(self.source, self.destination)
        buffer.writeInteger(addresses.familyAndProtocol)
        let tlvLength = self.tlvs.reduce(0) { $0 + 3 + $1.value.count }
        buffer.writeInteger(UInt16(addresses.octets.count + tlvLength))
        buffer.writeBytes(addresses.octets)
        for tlv in self.tlvs {
            buffer.writeInteger(tlv.type)
            buffer.writeInteger(UInt16(tlv.value.count))
            buffer.writeBytes(tlv.value)
        }
        return buffer
    }

    private static func addressBlock(
        _ source: SocketAddress?, _ destination: SocketAddress?
    ) -> (familyAndProtocol: UInt8, octets: [UInt8]) {
        switch (source, destination) {
        case (.v4(let source), .v4(let destination)):
            return (0x11, Self.octets(of: source.address.sin_addr) + Self.octets(of: destination.address.sin_addr)
                + Self.port(source.address.sin_port) + Self.port(destination.address.sin_port))
        case (.v6(let source), .v6(let destination)):
            return (0x21, Self.octets(of: source.address.sin6_addr) + Self.octets(of: destination.address.sin6_addr)
                + Self.port(source.address.sin6_port) + Self.port(destination.address.sin6_port))
        default:
            return (0x00, [])
        }
    }

    /// An address as it is in memory: already in network order.
    private static func octets<Address>(of address: Address) -> [UInt8] {
        withUnsafeBytes(of: address) { Array($0) }
    }

    /// A port from network order into two octets, most significant first.
    private static func port(_ networkOrder: UInt16) -> [UInt8] {
        let port = UInt16(bigEndian: networkOrder)
        return [UInt8(port >> 8), UInt8(port & 0xFF)]
    }
}
