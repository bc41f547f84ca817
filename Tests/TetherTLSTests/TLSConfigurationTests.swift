import NIOCore
import NIOPosix
import TetherTLS
import TetherTestSupport
import Testing

/// spec §2.1: configurations OpenSSL cannot use are refused with a clear error, and the refusal
/// frees what it allocated exactly once. `.ci/run` runs this suite under AddressSanitizer too.
@Suite struct TLSConfigurationTests {
    static let fixtures = try! TLSFixtures()

    /// A server name OpenSSL refuses (empty, or longer than a DNS name's 255 octets) fails the
    /// connection being made — and only that: the `SSL` it had allocated used to be freed twice.
    @Test(arguments: ["", String(repeating: "a", count: 300)])
    func aServerNameOpenSSLRefusesFailsTheConnectionNotTheProcess(_ name: String) async throws {
        let context = try TLSContext(configuration: Self.fixtures.edge(serverName: name))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        for _ in 0..<100 {
            let error = #expect(throws: TLSError.self) { try TLSHandler(context: context, eventLoop: group.next()) }
            #expect(error?.code == .configuration)
            #expect(error.map { "\($0)".contains("server name") } == true, "\(String(describing: error))")
        }
        try await group.shutdownGracefully()
    }

    @Test func aCipherSuiteListOpenSSLCannotUseIsRefused() {
        var configuration = Self.fixtures.hub()
        configuration.cipherSuites = "TLS_NOT_A_SUITE"
        let error = #expect(throws: TLSError.self) { try TLSContext(configuration: configuration) }
        #expect(error?.code == .configuration)
        #expect(error.map { "\($0)".contains("TLS_NOT_A_SUITE") } == true, "\(String(describing: error))")
    }

    @Test func theConfiguredCipherSuiteIsTheOneNegotiated() async throws {
        var hub = Self.fixtures.hub()
        hub.cipherSuites = "TLS_CHACHA20_POLY1305_SHA256"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await EchoServer.start(group: group, store: try TLSContextStore(configuration: hub))
        let client = try await TLSClient.connect(group: group, port: server.port, configuration: Self.fixtures.edge())
        #expect(try await client.handshake.get().cipher == "TLS_CHACHA20_POLY1305_SHA256")
        try await client.channel.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }
}
