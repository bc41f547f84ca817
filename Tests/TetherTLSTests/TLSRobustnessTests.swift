import Foundation
import NIOCore
import NIOPosix
import TetherTLS
import TetherTestSupport
import TetherWire
import Testing

/// spec §2.1: bad records, truncation, slow handshakes, close_notify and reload.
@Suite struct TLSRobustnessTests {
    static let fixtures = try! TLSFixtures()

    /// Connects our client, completes the handshake, then takes the TLS handler out so the test can
    /// write raw octets where records belong.
    private func handshakeThenRaw(group: any EventLoopGroup, port: Int) async throws -> TLSClient {
        let client = try await TLSClient.connect(group: group, port: port, configuration: Self.fixtures.edge())
        _ = try await client.handshake.get()
        try await client.channel.eventLoop.flatSubmit {
            do {
                let tls = try client.channel.pipeline.syncOperations.handler(type: TLSHandler.self)
                return client.channel.pipeline.syncOperations.removeHandler(tls)
            } catch {
                return client.channel.eventLoop.makeFailedFuture(error)
            }
        }.get()
        return client
    }

    @Test func garbageAfterTheHandshakeClosesTheConnectionCleanly() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: Self.fixtures.hub()))
        let client = try await self.handshakeThenRaw(group: group, port: server.port)
        // An application-data record header with a body that is not valid ciphertext.
        var garbage = ByteBuffer(bytes: [0x17, 0x03, 0x03, 0x00, 0x40])
        garbage.writeRepeatingByte(0xAB, count: 0x40)
        try await client.channel.writeAndFlush(garbage)
        try await client.collector.closed.futureResult.get()  // the server closed the connection
        // The server is still up: a new connection completes its handshake.
        let next = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await next.handshake.get().applicationProtocol == "tether/1")
        try await next.channel.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// A record header announcing 16 KiB, two octets of it, then the client's TCP FIN: the server
    /// reports the connection as truncated, closes it, and stays up.
    @Test func aTruncatedRecordClosesTheConnectionCleanly() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: Self.fixtures.hub()))
        let client = try await self.handshakeThenRaw(group: group, port: server.port)
        try await client.channel.writeAndFlush(ByteBuffer(bytes: [0x17, 0x03, 0x03, 0x40, 0x00, 0x01, 0x02]))
        try await client.channel.close(mode: .output)
        let error = await server.nextError()
        #expect((error as? TLSError)?.code == .truncated, "\(String(describing: error))")
        try await client.collector.closed.futureResult.get()  // the server closed the connection
        // The server is still up: a new connection completes its handshake.
        let next = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await next.handshake.get().applicationProtocol == "tether/1")
        try await next.channel.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func aSilentClientTimesOutInTheHandshake() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = Self.fixtures.hub()
        configuration.handshakeTimeout = .milliseconds(200)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: configuration))
        let silent = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: server.port).get()
        let handshake = await server.nextHandshake()
        #expect(handshake?.tlsCode == .handshakeTimeout)
        try await silent.closeFuture.get()  // and the server hung up
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func closeSendsCloseNotifyAndThePeerSeesACleanEnd() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: Self.fixtures.hub()))
        let client = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        _ = try await client.handshake.get()
        try await client.channel.writeAndFlush(ByteBuffer(string: "ping"))
        #expect(String(buffer: try await client.read(4)) == "ping")
        // Half-close: our close_notify goes out, the echo server answers with its own and closes.
        try await client.channel.close(mode: .output)
        try await client.collector.closed.futureResult.get()
        let errors = try await client.channel.eventLoop.submit { client.collector.errors.map { "\($0)" } }.get()
        #expect(!errors.contains { $0.contains("truncated") }, "the peer ended with close_notify: \(errors)")
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func aTCPEndWithoutCloseNotifyIsReportedAsTruncated() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (raw, rawAddress) = try await Self.rawServerThatHangsUpAfterTheHandshake(group: group)
        let client = try await TLSClient.connect(group: group, port: rawAddress, configuration: Self.fixtures.edge())
        _ = try await client.handshake.get()
        try await client.collector.closed.futureResult.get()
        let errors = try await client.channel.eventLoop.submit { client.collector.errors.compactMap { ($0 as? TLSError)?.code } }.get()
        #expect(errors.contains(.truncated))
        try await raw.close()
        try await group.shutdownGracefully()
    }

    /// A server that completes a TLS handshake, then closes the socket without close_notify.
    private static func rawServerThatHangsUpAfterTheHandshake(group: any EventLoopGroup) async throws -> (any Channel, Int) {
        let store = try TLSContextStore(configuration: Self.fixtures.hub())
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try TLSHandler(context: store.current, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    tls.handshakeCompleted.assumeIsolated().whenSuccess { _ in
                        // Skip TLS's close: drop the TCP connection under it.
                        _ = channel.pipeline.syncOperations.removeHandler(tls)
                        channel.close(promise: nil)
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (channel, channel.localAddress!.port!)
    }

    /// spec §2.1: new certificate files take effect for new connections; live ones keep going.
    @Test func reloadedCertificatesApplyToNewConnectionsOnly() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let directory = Self.fixtures.path("reload-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let authority = try CertificateAuthority(certificateFile: Self.fixtures.path("ca.pem"), keyFile: Self.fixtures.path("ca.key"))
        let first = try authority.issue(.hub(dnsNames: ["localhost"], ipAddresses: []))
        try first.write(certificateTo: directory + "/hub.pem", keyTo: directory + "/hub.key")
        var configuration = Self.fixtures.hub()
        configuration.certificateChainFile = directory + "/hub.pem"
        configuration.privateKeyFile = directory + "/hub.key"
        let store = try TLSContextStore(configuration: configuration)
        let server = try await EchoServer.start(group: group, store: store)

        let before = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await before.handshake.get().certificateSHA256 == first.certificateSHA256)
        #expect(try store.reloadIfChanged() == false)

        let second = try authority.issue(.hub(dnsNames: ["localhost"], ipAddresses: []))
        try second.write(certificateTo: directory + "/hub.pem", keyTo: directory + "/hub.key")
        #expect(try store.reloadIfChanged() == true)

        let after = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await after.handshake.get().certificateSHA256 == second.certificateSHA256)
        // The connection made before the reload still works.
        try await before.channel.writeAndFlush(ByteBuffer(string: "still here"))
        #expect(String(buffer: try await before.read(10)) == "still here")

        // A broken file is refused; the last good context stays in use.
        try "not a certificate".write(toFile: directory + "/hub.pem", atomically: true, encoding: .utf8)
        #expect(throws: TLSError.self) { try store.reloadIfChanged() }
        let third = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await third.handshake.get().certificateSHA256 == second.certificateSHA256)

        for client in [before, after, third] { try await client.channel.close() }
        try await server.channel.close()
        try await group.shutdownGracefully()
    }
}
