import NIOCore

extension OpenFrame {
    /// Whether `service` is 1–255 octets of `[A-Za-z0-9._:/@+-]` (spec §5.2).
    public static func isValidService<Bytes: Collection<UInt8>>(_ service: Bytes) -> Bool {
        (1...255).contains(service.count) && service.allSatisfy(isServiceOctet)
    }

    /// Whether `key` is 1–64 octets of `[a-z0-9._-]` (spec §5.2).
    public static func isValidMetadataKey<Bytes: Collection<UInt8>>(_ key: Bytes) -> Bool {
        (1...64).contains(key.count) && key.allSatisfy(isKeyOctet)
    }

    /// The encoded payload size of this OPEN (spec §5.2), to check against the peer's `MAX_OPEN_SIZE`.
    public var payloadSize: Int {
        3 + self.service.utf8.count + self.metadata.entries.reduce(0) { $0 + 3 + $1.key.utf8.count + $1.value.readableBytes }
    }

    /// Checks everything the peer's decoder checks (spec §5.2), so a local caller gets the error
    /// instead of the peer ending the connection.
    public func validate(maxOpenSize: Int) throws(WireError) {
        guard Self.isValidService(self.service.utf8) else {
            throw WireError(.invalidService, "service name must be 1–255 octets of [A-Za-z0-9._:/@+-]")
        }
        for entry in self.metadata.entries {
            guard Self.isValidMetadataKey(entry.key.utf8) else {
                throw WireError(.invalidMetadataKey, "metadata key must be 1–64 octets of [a-z0-9._-]")
            }
            guard entry.value.readableBytes <= 0xFFFF else {
                throw WireError(.openTooLarge, "metadata value over 65,535 octets")
            }
        }
        guard self.payloadSize <= maxOpenSize else {
            throw WireError(.openTooLarge, "OPEN payload \(self.payloadSize) octets exceeds \(maxOpenSize)")
        }
    }

    @inlinable
    static func isServiceOctet(_ octet: UInt8) -> Bool {
        switch octet {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "@"),
            UInt8(ascii: "+"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    @inlinable
    static func isKeyOctet(_ octet: UInt8) -> Bool {
        switch octet {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}
