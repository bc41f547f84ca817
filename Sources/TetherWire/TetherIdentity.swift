/// A verified edge identity: the single URI SAN `tether://<tenant>/<agent-id>` of its client
/// certificate (spec §2.2). Never anything the peer merely says.
public struct TetherIdentity: Hashable, Sendable, CustomStringConvertible {
    /// 1–63 octets of `[a-z0-9-]`, not starting or ending with `-`.
    public let tenant: String
    /// 1–128 octets of `[A-Za-z0-9._-]`, not `.` or `..`.
    public let agentID: String

    public init?(tenant: String, agentID: String) {
        guard Self.isValidTenant(tenant), Self.isValidAgentID(agentID) else { return nil }
        self.tenant = tenant
        self.agentID = agentID
    }

    /// Parses `tether://<tenant>/<agent-id>`; nil for anything else (spec §2.2).
    public init?(uri: String) {
        let prefix = "tether://"
        guard uri.hasPrefix(prefix) else { return nil }
        let rest = uri.dropFirst(prefix.count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        self.init(tenant: String(rest[..<slash]), agentID: String(rest[rest.index(after: slash)...]))
    }

    public var uri: String { "tether://\(self.tenant)/\(self.agentID)" }
    public var description: String { self.uri }

    /// 1–63 octets of `[a-z0-9-]`, not starting or ending with `-` (spec §2.2): a DNS label.
    public static func isValidTenant(_ tenant: some StringProtocol) -> Bool {
        let bytes = Array(tenant.utf8)
        guard (1...63).contains(bytes.count), bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "-") else {
            return false
        }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): true
            default: false
            }
        }
    }

    static func isValidAgentID(_ agentID: String) -> Bool {
        let bytes = Array(agentID.utf8)
        guard (1...128).contains(bytes.count), agentID != ".", agentID != ".." else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                true
            default: false
            }
        }
    }
}
