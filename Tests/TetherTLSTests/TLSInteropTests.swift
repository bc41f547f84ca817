import NIOCore
import NIOPosix
import TetherTLS
import TetherTestSupport
import TetherWire
import Testing

/// spec §2: interop with real OpenSSL peers, in both directions, and every refusal.
@Suite(.serialized) struct TLSInteropTests {
    static let fixtures = try! TLSFixtures()

    private func withServer(
        _ configuration: TLSConfiguration = TLSInteropTests.fixtures.hub(),
        _ body: (EchoServer, MultiThreadedEventLoopGroup) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: configuration))
        try await body(server, group)
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// `openssl s_client` against our server, with the arguments that vary per case.
    private func sClient(_ port: Int, _ arguments: [String]) throws -> OpenSSLProcess {
        try OpenSSLProcess(
            ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", Self.fixtures.path("ca.pem"), "-servername", "localhost",
             "-verify_return_error", "-quiet"] + arguments)
    }

    @Test func openSSLClientTalksToOurServer() async throws {
        try await self.withServer { server, _ in
            let client = try self.sClient(
                server.port,
                ["-cert", Self.fixtures.path("edge.pem"), "-key", Self.fixtures.path("edge.key"), "-alpn", "tether/1"])
            defer { client.stop() }
            let handshake = await server.nextHandshake()
            let peer = try #require(try handshake?.get())
            #expect(peer.identity == Self.fixtures.identity)
            #expect(peer.applicationProtocol == "tether/1")
            #expect(peer.version == "TLSv1.3")
            client.send("hello from s_client\n")
            #expect(await client.waitFor("hello from s_client"))
        }
    }

    @Test func ourClientTalksToOpenSSLServer() async throws {
        let server = try OpenSSLProcess(
            ["s_server", "-accept", "127.0.0.1:0", "-cert", Self.fixtures.path("hub.pem"), "-key", Self.fixtures.path("hub.key"),
             "-CAfile", Self.fixtures.path("ca.pem"), "-Verify", "1", "-verify_return_error", "-alpn", "tether/1", "-rev",
             "-naccept", "1", "-tls1_3"])
        defer { server.stop() }
        let port = try #require(await server.acceptedPort())
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try await TLSClient.connect(group: group, port: port, configuration: Self.fixtures.edge())
        let peer = try await client.handshake.get()
        #expect(peer.applicationProtocol == "tether/1")
        #expect(peer.identity == nil)
        try await client.channel.writeAndFlush(ByteBuffer(string: "tether\n"))
        let echoed = try await client.read(7)
        #expect(String(buffer: echoed) == "rehtet\n")
        try await client.channel.close()
        try await group.shutdownGracefully()
    }

    @Test(arguments: [
        ("no client certificate", [String](), TLSError.Code.noClientCertificate),
        ("an expired certificate", ["-cert", "expired.pem", "-key", "expired.key"], .certificateExpired),
        ("a certificate from an unknown CA", ["-cert", "stranger.pem", "-key", "stranger.key"], .unknownCA),
        ("no identity SAN", ["-cert", "no-san.pem", "-key", "no-san.key"], .invalidIdentity),
        ("two identity SANs", ["-cert", "two-san.pem", "-key", "two-san.key"], .invalidIdentity),
        ("a URI SAN that is not tether://", ["-cert", "bad-san.pem", "-key", "bad-san.key"], .invalidIdentity),
        ("TLS 1.2 only", ["-cert", "edge.pem", "-key", "edge.key", "-tls1_2"], .protocolVersion),
        ("the wrong ALPN", ["-cert", "edge.pem", "-key", "edge.key", "-alpn", "http/1.1"], .wrongALPN),
        ("no ALPN", ["-cert", "edge.pem", "-key", "edge.key"], .wrongALPN),
    ])
    func ourServerRefuses(_ label: String, _ arguments: [String], _ expected: TLSError.Code) async throws {
        try await self.withServer { server, _ in
            let paths = arguments.map { $0.hasSuffix(".pem") || $0.hasSuffix(".key") ? Self.fixtures.path($0) : $0 }
            let alpn = arguments.contains("-alpn") || label == "no ALPN" ? [] : ["-alpn", "tether/1"]
            let client = try self.sClient(server.port, paths + alpn)
            defer { client.stop() }
            let handshake = await server.nextHandshake()
            #expect(handshake?.tlsCode == expected, "\(label): \(String(describing: handshake))")
        }
    }

    /// spec §2.1: a client that offers no ALPN, or only other protocols, is refused during the
    /// handshake with the fatal alert `no_application_protocol` (120) — not by a connection that
    /// completes its handshake and then closes without a word.
    @Test(arguments: [("no ALPN", [String]()), ("the wrong ALPN", ["-alpn", "http/1.1"])])
    func aClientWithoutOurALPNGetsTheNoApplicationProtocolAlert(_ label: String, _ alpn: [String]) async throws {
        try await self.withServer { server, _ in
            let client = try self.sClient(
                server.port, ["-cert", Self.fixtures.path("edge.pem"), "-key", Self.fixtures.path("edge.key")] + alpn)
            defer { client.stop() }
            #expect(await server.nextHandshake()?.tlsCode == .wrongALPN)
            #expect(await client.waitFor("alert number 120"), "\(label): s_client said \(client.text)")
        }
    }

    /// A public server (the hub's HTTP CONNECT front door, issue 18): `openssl s_client` with no
    /// certificate is served, offering `http/1.1` or no ALPN at all; offering only another
    /// protocol still gets the `no_application_protocol` alert (RFC 7301).
    @Test(arguments: [("http/1.1", ["-alpn", "http/1.1"], "http/1.1"), ("no ALPN", [String](), nil)])
    func aPublicServerTakesClientsWithoutCertificates(_ label: String, _ alpn: [String], _ agreed: String?) async throws {
        let configuration = TLSConfiguration.publicServer(
            certificateChainFile: Self.fixtures.path("hub.pem"), privateKeyFile: Self.fixtures.path("hub.key"))
        try await self.withServer(configuration) { server, _ in
            let client = try self.sClient(server.port, alpn)
            defer { client.stop() }
            let peer = try #require(try await server.nextHandshake()?.get(), "\(label)")
            #expect(peer.identity == nil && peer.certificateSHA256 == nil)
            #expect(peer.applicationProtocol == agreed)
            client.send("CONNECT over TLS\n")
            #expect(await client.waitFor("CONNECT over TLS"), "\(label): s_client said \(client.text)")
        }
        try await self.withServer(configuration) { server, _ in
            let client = try self.sClient(server.port, ["-alpn", "h2"])
            defer { client.stop() }
            #expect(await server.nextHandshake()?.tlsCode == .wrongALPN)
            #expect(await client.waitFor("alert number 120"), "s_client said \(client.text)")
        }
    }

    @Test func ourClientRefusesAServerThatDoesNotMatchTheNameDialed() async throws {
        try await self.withServer { server, group in
            let client = try await TLSClient.connect(
                group: group, port: server.port, configuration: Self.fixtures.edge(serverName: "wrong.example"))
            let result = await Result { try await client.handshake.get() }
            #expect(result.tlsCode == .nameMismatch)
        }
    }

    @Test func ourClientVerifiesAnIPAddress() async throws {
        try await self.withServer { server, group in
            let good = try await TLSClient.connect(
                group: group, port: server.port, configuration: Self.fixtures.edge(serverName: "127.0.0.1"))
            #expect(try await good.handshake.get().applicationProtocol == "tether/1")
            let bad = try await TLSClient.connect(
                group: group, port: server.port, configuration: Self.fixtures.edge(serverName: "127.0.0.2"))
            #expect(await Result { try await bad.handshake.get() }.tlsCode == .nameMismatch)
        }
    }

    @Test func ourClientRefusesAServerFromAnUnknownCA() async throws {
        var configuration = Self.fixtures.hub()
        configuration.certificateChainFile = Self.fixtures.path("stranger-hub.pem")
        configuration.privateKeyFile = Self.fixtures.path("stranger-hub.key")
        try await self.withServer(configuration) { server, group in
            let client = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
            #expect(await Result { try await client.handshake.get() }.tlsCode == .unknownCA)
        }
    }

    @Test func ourClientRefusesATLS12OnlyServer() async throws {
        let server = try OpenSSLProcess(
            ["s_server", "-accept", "127.0.0.1:0", "-cert", Self.fixtures.path("hub.pem"), "-key", Self.fixtures.path("hub.key"),
             "-alpn", "tether/1", "-naccept", "1", "-tls1_2"])
        defer { server.stop() }
        let port = try #require(await server.acceptedPort())
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try await TLSClient.connect(group: group, port: port, configuration: Self.fixtures.edge())
        #expect(await Result { try await client.handshake.get() }.tlsCode == .protocolVersion)
        try? await client.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func tls12IsAcceptedOnlyWhenConfigured() async throws {
        try await self.withServer(Self.fixtures.hub(minimumVersion: .tls12)) { server, _ in
            let client = try self.sClient(
                server.port,
                ["-cert", Self.fixtures.path("edge.pem"), "-key", Self.fixtures.path("edge.key"), "-alpn", "tether/1",
                 "-tls1_2"])
            defer { client.stop() }
            let peer = try #require(try await server.nextHandshake()?.get())
            #expect(peer.version == "TLSv1.2")
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
