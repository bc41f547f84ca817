import NIOConcurrencyHelpers
import NIOCore
import Testing
import TetherWire

@testable import TetherRelay

/// The pieces of the hub's admission (spec §10.3) that need no socket.
struct HubAdmissionTests {
    /// A token bucket: a burst, then one handshake per 1/rate of (manual) time.
    @Test func theHandshakeRateLetsABurstThroughThenTheRate() {
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let limit = HandshakeRateLimit(perSecond: 10, burst: 3, now: { clock.withLockedValue { $0 } })
        #expect((0..<5).map { _ in limit.take() } == [true, true, true, false, false])
        clock.withLockedValue { $0 = $0 + .milliseconds(100) }  // one token's worth
        #expect(limit.take())
        #expect(!limit.take())
        clock.withLockedValue { $0 = $0 + .seconds(60) }  // a quiet minute refills the burst, no more
        #expect((0..<4).map { _ in limit.take() } == [true, true, true, false])
    }

    /// A replacement's record stays when the connection it replaced goes away after it.
    /// `dial.source`: the edge's connection leaves from the configured address, and the hub
    /// sees it come from there (README "Configuration").
    @Test func anEdgeDialsFromItsConfiguredSourceAddress() async throws {
        var pair = try await RelayPair(policy: "version: 1\n")
        pair.edge.dial.source = "127.0.0.3"
        try await pair.run { hub, edge in
            #expect(edge.connection?.channel.localAddress?.ipAddress == "127.0.0.3")
            let status = await hub.agent(pair.certificates.identity)
            #expect(status?.address?.hasPrefix("127.0.0.3:") == true, "\(String(describing: status?.address))")
        }
    }

    @Test func theRegistryKeepsTheNewerConnectionOfAnIdentity() async throws {
        let registry = InMemoryAgentRegistry()
        let identity = TetherIdentity(tenant: "acme", agentID: "node-1")!
        let older = AgentPresence(
            identity: identity, hubInstance: 7, connection: 1, address: nil, connectedSince: .now, certificateNotAfter: nil)
        var newer = older
        newer.connection = 2
        try await registry.connected(older)
        try await registry.connected(newer)
        try await registry.disconnected(older)
        #expect(try await registry.presence(of: identity).map(\.connection) == [2])
        var elsewhere = newer
        elsewhere.hubInstance = 8
        try await registry.connected(elsewhere)
        #expect(try await registry.presence(of: identity).count == 2)  // one per hub
        #expect(try await registry.agents(tenant: "globex").isEmpty)
        try await registry.disconnected(newer)
        #expect(try await registry.agents(tenant: "acme").map(\.hubInstance) == [8])
    }
}
