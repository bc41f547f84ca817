import NIOCore

/// The 9-octet frame header (spec §4.1).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-----------------------------------------------+---------------+
/// |                 Length (24)                   |   Type (8)    |
/// +---------------+-------------------------------+---------------+
/// |   Flags (8)   |                Stream ID (32) ...
/// +---------------+-----------------------------------------------+
///    ... Stream ID |              Payload (Length octets) ...
/// +---------------+-----------------------------------------------+
/// ```
public struct FrameHeader: Hashable, Sendable {
    public static let size = 9

    /// Payload length, 0…2²⁴−1.
    public var length: Int
    public var type: FrameType
    public var flags: UInt8
    public var streamID: StreamID

    @inlinable
    public init(length: Int, type: FrameType, flags: UInt8, streamID: StreamID) {
        precondition(length >= 0 && length <= 0xFF_FFFF, "frame length must fit 24 bits")
        self.length = length
        self.type = type
        self.flags = flags
        self.streamID = streamID
    }
}

/// The connection preface's magic (spec §3.1): `\x89TETHER\n`.
public enum Preface {
    public static let magic: [UInt8] = [0x89, 0x54, 0x45, 0x54, 0x48, 0x45, 0x52, 0x0A]
}

extension ByteBuffer {
    /// Writes a frame header (spec §4.1). Returns the octets written (always 9).
    @inlinable
    @discardableResult
    public mutating func writeFrameHeader(_ header: FrameHeader) -> Int {
        // One 32-bit write for length + type, one for flags + the first 3 octets of the id, one for the last.
        let lengthAndType = UInt32(truncatingIfNeeded: header.length) << 8 | UInt32(header.type.rawValue)
        self.writeMultipleIntegers(lengthAndType, header.flags, header.streamID.rawValue)
        return FrameHeader.size
    }

    /// Reads a frame header if 9 octets are readable.
    @inlinable
    public mutating func readFrameHeader() -> FrameHeader? {
        guard let (lengthAndType, flags, stream) = self.readMultipleIntegers(as: (UInt32, UInt8, UInt32).self) else {
            return nil
        }
        return FrameHeader(
            length: Int(lengthAndType >> 8),
            type: FrameType(rawValue: UInt8(truncatingIfNeeded: lengthAndType)),
            flags: flags,
            streamID: StreamID(stream)
        )
    }
}
