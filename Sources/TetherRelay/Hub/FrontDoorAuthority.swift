import TetherWire

/// What a CONNECT through the hub's front door names (spec/RELAYS.md §4.1): an agent's exposed
/// target, as one DNS name `<target>.<agent-id>.<tenant>.<zone>` — curl and kubectl use the
/// authority for `Host` and SNI, so it must be a valid DNS name, and it must name target, agent and
/// tenant unambiguously.
///
/// A tenant is a DNS label already (spec §2.2). A target or agent id that is one — 1–63 of
/// `[a-z0-9-]`, not starting or ending with `-`, without `--` at its third and fourth octets
/// (reserved for IDNA), and not starting with `x-` — is its own label. Any other is written
/// `x-` + its octets in lowercase base32 (RFC 4648, no padding), which fits names of up to 38
/// octets; longer ones have no authority.
public struct FrontDoorAuthority: Hashable, Sendable {
    public var target: String
    public var agent: TetherIdentity

    public init(target: String, agent: TetherIdentity) {
        self.target = target
        self.agent = agent
    }

    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The DNS name under `zone`; nil when the target or agent id is too long for one label.
    public func host(zone: String) -> String? {
        guard let target = Self.label(self.target), let agent = Self.label(self.agent.agentID) else { return nil }
        return "\(target).\(agent).\(self.agent.tenant).\(zone)"
    }

    /// Reads `host[:port]` — DNS names are case-insensitive, so in any case; the port is not
    /// looked at (the expose names host and port).
    public static func parse(_ authority: String, zone: String) throws(ParseError) -> FrontDoorAuthority {
        var host = Substring(authority.lowercased())
        if let colon = host.lastIndex(of: ":"), host[host.index(after: colon)...].allSatisfy(\.isNumber) {
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }  // a fully qualified name
        let suffix = "." + zone.lowercased()
        guard host.hasSuffix(suffix) else { throw ParseError(description: "\(host) is not a name under \(zone)") }
        let labels = host.dropLast(suffix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count == 3 else {
            throw ParseError(description: "\(host) does not have the form <target>.<agent>.<tenant>.\(zone)")
        }
        guard let target = Self.name(labels[0]), OpenFrame.isValidService(target.utf8) else {
            throw ParseError(description: "\(labels[0]) does not name a target")
        }
        guard let agentID = Self.name(labels[1]), let agent = TetherIdentity(tenant: String(labels[2]), agentID: agentID) else {
            throw ParseError(description: "\(labels[1]).\(labels[2]) does not name an agent")
        }
        return FrontDoorAuthority(target: target, agent: agent)
    }

    /// `name` as one DNS label; nil when it does not fit.
    static func label(_ name: String) -> String? {
        if Self.isPlainLabel(Substring(name)) { return name }
        let encoded = "x-" + Base32.encode(Array(name.utf8))
        return encoded.utf8.count <= 63 ? encoded : nil
    }

    /// The name a label stands for; nil when it is neither form.
    static func name(_ label: Substring) -> String? {
        if Self.isPlainLabel(label) { return String(label) }
        guard label.hasPrefix("x-"), label.utf8.count <= 63, let octets = Base32.decode(label.dropFirst(2)),
            let name = String(validating: octets, as: UTF8.self), !Self.isPlainLabel(Substring(name))
        else { return nil }
        return name  // one spelling per name: a plain name written encoded is refused
    }

    /// A DNS label as a tenant is one (spec §2.2), neither in IDNA's `??--` form nor `x-…`.
    private static func isPlainLabel(_ label: Substring) -> Bool {
        let octets = Array(label.utf8)
        let idnaForm = octets.count >= 4 && octets[2] == UInt8(ascii: "-") && octets[3] == UInt8(ascii: "-")
        return TetherIdentity.isValidTenant(label) && !label.hasPrefix("x-") && !idnaForm
    }
}

/// RFC 4648 base32 in lowercase, without padding: DNS-label safe.
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    static func encode(_ octets: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer = 0
        var bits = 0
        for octet in octets {
            buffer = buffer << 8 | Int(octet)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(Self.alphabet[(buffer >> bits) & 31])
            }
        }
        if bits > 0 { out.append(Self.alphabet[(buffer << (5 - bits)) & 31]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Nil for a character outside the alphabet, or a length or trailing bits no encoding yields.
    static func decode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = 0
        var bits = 0
        for character in text.utf8 {
            guard let value = Self.alphabet.firstIndex(of: character) else { return nil }
            buffer = (buffer << 5 | value) & 0xFFFF
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((buffer >> bits) & 0xFF))
            }
        }
        // What is left must be the zero padding of the last character, shorter than a character.
        guard bits < 5, buffer & ((1 << bits) - 1) == 0 else { return nil }
        return out
    }
}
