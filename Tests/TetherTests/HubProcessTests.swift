import Foundation
import NIOCore
import NIOPosix
import Testing
import Tether
import TetherBench
import TetherRelay
import TetherTLS
import TetherWire

/// `tether hub` as a real process from its configuration file; the edges are dialers in this
/// process with certificates of their own, so each test sees the hub's GOAWAY codes and stream
/// refusals directly (spec §10.3, §11).
@Suite(.serialized) struct HubProcessTests {
    struct Hub {
        let site: RelayProcessTests.Site
        var directory: String { self.site.directory }

        /// A hub with the site's echo service (tenant demo), `extra` keys appended to its file.
        init(extra: String = "") async throws {
            let echo = try await RelayProcessTests.echoServer()
            self.site = try await RelayProcessTests.Site(echoPort: echo.localAddress!.port!)
            try (String(contentsOfFile: self.directory + "/hub.yaml", encoding: .utf8) + "\n" + extra)
                .write(toFile: self.directory + "/hub.yaml", atomically: true, encoding: .utf8)
        }

        /// A certificate for `identity`, valid for `seconds` more.
        func issue(_ identity: TetherIdentity, seconds: Int = 86_400) throws -> TLSConfiguration {
            let authority = try CertificateAuthority(certificateFile: self.directory + "/ca.pem", keyFile: self.directory + "/ca.key")
            var request = CertificateAuthority.Request.edge(identity)
            request.notAfter = seconds
            let name = self.directory + "/\(identity.tenant)-\(identity.agentID)"
            try authority.issue(request).write(certificateTo: name + ".pem", keyTo: name + ".key")
            return TLSConfiguration(
                role: .client, certificateChainFile: name + ".pem", privateKeyFile: name + ".key",
                trustedCAFiles: [self.directory + "/ca.pem"], serverName: "127.0.0.1")
        }

        /// Dials the hub as `identity`, once it listens.
        func dial(_ identity: TetherIdentity, seconds: Int = 86_400) async throws -> TetherConnection {
            let tls = try TLSContext(configuration: try self.issue(identity, seconds: seconds))
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: self.site.hubPort)
            for _ in 0..<300 {
                if let connection = try? await TetherTransport.dial(
                    group: MultiThreadedEventLoopGroup.singleton, to: address, tls: tls, configuration: .init(role: .dialer))
                {
                    return connection
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw TimedOut()
        }
    }

    /// Dials as `identity` and expects the hub to refuse it: the GOAWAY's code and text.
    static func refusal(_ hub: Hub, _ identity: TetherIdentity) async throws -> (ErrorCode?, String) {
        let tls = try TLSContext(configuration: try hub.issue(identity))
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: hub.site.hubPort)
        do {
            let connection = try await TetherTransport.dial(
                group: MultiThreadedEventLoopGroup.singleton, to: address, tls: tls, configuration: .init(role: .dialer))
            let goAway = try await connection.goAwayReceived()
            return (goAway.code, goAway.debug)
        } catch let error as TetherError {
            return (error.errorCode, error.detail)
        }
    }

    static let node1 = TetherIdentity(tenant: "demo", agentID: "node-1")!

    /// A round trip through the hub's `echo` service on `connection`.
    static func echoes(_ connection: TetherConnection) async throws -> Bool {
        let stream = try await connection.openStream(service: "echo", class: .bulk)
        try await stream.write(ByteBuffer(string: "ping"))
        try await stream.finish()
        var answer = ByteBuffer()
        for try await var piece in stream.chunks { answer.writeBuffer(&piece) }
        return String(buffer: answer) == "ping"
    }

    /// spec §2.2, §11 `REPLACED`: the newer connection of an identity wins; the older is told why.
    @Test func theSameIdentityTwiceReplacesTheFirst() async throws {
        let hub = try await Hub()
        defer { hub.site.certificates.remove() }
        let process = try hub.site.start("hub")
        let first = try await hub.dial(Self.node1)
        #expect(try await Self.echoes(first))
        let second = try await hub.dial(Self.node1)
        let goAway = try await first.goAwayReceived()
        #expect(goAway.code == .replaced)
        #expect(try await Self.echoes(second))
        try await RelayProcessTests.kill(process)
    }

    /// spec §10.3: a revoked identity is refused at admission; a reload of the list (SIGHUP)
    /// drains a live connection it now names; the others stay.
    @Test func aRevokedIdentityIsRefusedAndAReloadDrainsALiveOne() async throws {
        let hub = try await Hub(extra: "revoked: revoked.txt\n")
        defer { hub.site.certificates.remove() }
        let revoked = hub.directory + "/revoked.txt"
        try "tether://demo/lost-laptop\n".write(toFile: revoked, atomically: true, encoding: .utf8)
        let process = try hub.site.start("hub")
        let live = try await hub.dial(Self.node1)
        let other = try await hub.dial(TetherIdentity(tenant: "demo", agentID: "node-2")!)
        let refused = try await Self.refusal(hub, TetherIdentity(tenant: "demo", agentID: "lost-laptop")!)
        #expect(refused.0 == .refused && refused.1.contains("identity revoked"), "\(refused)")
        #expect(try await Self.echoes(live))

        try "tether://demo/lost-laptop\ntether://demo/node-1\n".write(toFile: revoked, atomically: true, encoding: .utf8)
        Foundation.kill(process.processIdentifier, SIGHUP)
        let drained = try await live.goAwayReceived()
        #expect(drained.code == .refused && drained.debug == "identity revoked")
        #expect(try await Self.echoes(other))
        try await RelayProcessTests.kill(process)
    }

    /// An identity may hold `connectionsPerIdentity` connections, draining ones included.
    @Test func aConnectionOverTheIdentitysCapIsRefused() async throws {
        let hub = try await Hub(extra: "limits: {connectionsPerIdentity: 1}\n")
        defer { hub.site.certificates.remove() }
        let process = try hub.site.start("hub")
        let first = try await hub.dial(Self.node1)
        let refused = try await Self.refusal(hub, Self.node1)
        #expect(refused.0 == .refused && refused.1.contains("too many connections for this identity"), "\(refused)")
        #expect(try await Self.echoes(first))
        try await RelayProcessTests.kill(process)
    }

    /// A tenant not listed for a service gets the refusal of a service that does not exist.
    @Test func aTenantNotListedForAServiceIsRefused() async throws {
        let hub = try await Hub()
        defer { hub.site.certificates.remove() }
        let process = try hub.site.start("hub")
        let foreign = try await hub.dial(TetherIdentity(tenant: "globex", agentID: "node-1")!)
        await #expect(throws: TetherError.self) { _ = try await Self.echoes(foreign) }
        do {
            _ = try await Self.echoes(foreign)
        } catch let error as TetherError {
            #expect(error.errorCode == .unknownService)
        }
        #expect(try await Self.echoes(try await hub.dial(Self.node1)))
        try await RelayProcessTests.kill(process)
    }

    /// spec §10.3: a connection is drained when its certificate expires.
    @Test func aConnectionIsDrainedWhenItsCertificateExpires() async throws {
        let hub = try await Hub()
        defer { hub.site.certificates.remove() }
        let process = try hub.site.start("hub")
        let expiring = try await hub.dial(TetherIdentity(tenant: "demo", agentID: "short-lived")!, seconds: 3)
        let drained = try await expiring.goAwayReceived()
        #expect(drained.code == .refused && drained.debug == "certificate expired")
        try await RelayProcessTests.kill(process)
    }
}
