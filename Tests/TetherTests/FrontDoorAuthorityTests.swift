import TetherWire
import Testing

@testable import TetherRelay

/// spec/RELAYS.md §4.1: the DNS name a CONNECT through the hub's front door uses for an agent's
/// target, and back.
@Suite struct FrontDoorAuthorityTests {
    static let zone = "agents.plane.example"

    /// RFC 4648 §10's vectors, in lowercase without padding.
    @Test func base32IsRFC4648() {
        let vectors = [("", ""), ("f", "my"), ("fo", "mzxq"), ("foo", "mzxw6"), ("foob", "mzxw6yq"), ("fooba", "mzxw6ytb"), ("foobar", "mzxw6ytboi")]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8)) == encoded)
            #expect(Base32.decode(Substring(encoded)) == Array(plain.utf8))
        }
        // Lengths and trailing bits no encoding produces.
        for invalid in ["m", "mzx", "mzxw6y", "mz", "m1", "MY"] where invalid != "mz" {
            #expect(Base32.decode(Substring(invalid)) == nil, "\(invalid)")
        }
        #expect(Base32.decode("mz") == nil, "\"mz\" leaves a non-zero bit: only \"my\" spells \"f\"")
    }

    /// The spec's examples, both ways.
    @Test(arguments: [
        ("kube-api", "node-1", "acme", "kube-api.node-1.acme.agents.plane.example"),
        ("node-exporter", "Node_7", "acme", "node-exporter.x-jzxwizk7g4.acme.agents.plane.example"),
        ("logs/app", "node-1", "globex", "x-nrxwo4zpmfyha.node-1.globex.agents.plane.example"),
        ("x-ray", "node-1", "acme", "x-pawxeylz.node-1.acme.agents.plane.example"),
    ])
    func namesMapToOneLabelEachAndBack(_ target: String, _ agentID: String, _ tenant: String, _ host: String) throws {
        let authority = FrontDoorAuthority(target: target, agent: try #require(TetherIdentity(tenant: tenant, agentID: agentID)))
        #expect(authority.host(zone: Self.zone) == host)
        #expect(try FrontDoorAuthority.parse(host + ":443", zone: Self.zone) == authority)
        #expect(try FrontDoorAuthority.parse(host.uppercased() + ".:8443", zone: Self.zone) == authority, "DNS is case-insensitive")
    }

    /// Every target and agent id the protocol allows that fits a label comes back as itself.
    @Test func everyNameThatFitsRoundTrips() throws {
        let alphabet = Array("abcXYZ019._-:/@+")
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let length = Int.random(in: 1...38, using: &generator)
            let target = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            let agentID = String(target.filter { "abcXYZ019._-".contains($0) }.prefix(38))
            guard OpenFrame.isValidService(target.utf8), let agent = TetherIdentity(tenant: "t-1", agentID: agentID) else { continue }
            let authority = FrontDoorAuthority(target: target, agent: agent)
            let host = try #require(authority.host(zone: Self.zone), "\(target) / \(agentID)")
            #expect(host.split(separator: ".").allSatisfy { $0.utf8.count <= 63 })
            #expect(try FrontDoorAuthority.parse(host, zone: Self.zone) == authority)
        }
        let long = FrontDoorAuthority(target: String(repeating: "A", count: 39), agent: TetherIdentity(tenant: "t", agentID: "n")!)
        #expect(long.host(zone: Self.zone) == nil, "39 octets need 63 base32 characters after x-")
    }

    @Test(arguments: [
        "kube-api.node-1.acme.elsewhere.example:443",  // another zone
        "node-1.acme.agents.plane.example:443",  // no target
        "a.kube-api.node-1.acme.agents.plane.example:443",  // one label too many
        "kube-api.node-1.Ac_me.agents.plane.example:443",  // not a tenant
        "x-nrxwo4zpm.node-1.acme.agents.plane.example:443",  // base32 of "logs/" and a stray character
        "x-nn2wezjnmfygs.node-1.acme.agents.plane.example:443",  // "kube-api" written encoded: one spelling only
        "ab--c.node-1.acme.agents.plane.example:443",  // IDNA's reserved form
        "x-.node-1.acme.agents.plane.example:443",  // the empty name
    ])
    func whatDoesNotNameATargetIsRefused(_ authority: String) {
        #expect(throws: FrontDoorAuthority.ParseError.self) { try FrontDoorAuthority.parse(authority, zone: Self.zone) }
    }
}
