import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import TetherBench
import TetherTLS
import TetherWire
import Testing

@testable import TetherRelay

/// The metadata path of the relays (README "Metadata"): NDJSON into the edge's listener, one
/// filtered METADATA message per line, NDJSON out of the hub to the service's backend.
@Suite struct MetadataRelayTests {
    // MARK: The line decoder

    private func lines(_ chunks: [String], maximumLength: Int = 16) throws -> [MetadataLine] {
        var decoder = MetadataLineDecoder(maximumLength: maximumLength)
        var buffer = ByteBuffer()
        var lines: [MetadataLine] = []
        for chunk in chunks {
            buffer.writeString(chunk)
            while let line = try decoder.decode(buffer: &buffer) { lines.append(line) }
        }
        while let line = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { lines.append(line) }
        return lines
    }

    @Test func linesSplitOnLineEndsInAnyChunking() throws {
        let expected: [MetadataLine] = [
            .document(ByteBuffer(string: #"{"a":1}"#)), .blank, .document(ByteBuffer(string: #"{"b":2}"#)),
            .document(ByteBuffer(string: #"{"c":3}"#)),
        ]
        let text = "{\"a\":1}\n \t\r\n{\"b\":2}\r\n{\"c\":3}"  // the last line has no line end
        #expect(try self.lines([text]) == expected)
        #expect(try self.lines(text.map { String($0) }) == expected)  // one octet at a time
    }

    /// An over-long line is thrown away as it arrives — the decoder never holds more than the
    /// limit — and the next line is read as usual.
    @Test func anOverlongLineIsSkippedAndTheNextOneRead() throws {
        let long = String(repeating: "x", count: 40)
        #expect(
            try self.lines([#"{"a":1}"# + "\n" + long.prefix(20), long.dropFirst(20) + "\n" + #"{"b":2}"# + "\n"])
                == [.document(ByteBuffer(string: #"{"a":1}"#)), .tooLong(octets: 40), .document(ByteBuffer(string: #"{"b":2}"#))])
        var decoder = MetadataLineDecoder(maximumLength: 16)
        var buffer = ByteBuffer(string: String(repeating: "y", count: 1_000))
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 0)  // nothing held
        #expect(try self.lines([long]) == [.tooLong(octets: 40)])  // unterminated at the end of input
    }

    // MARK: Edge and hub

    /// A node agent's inventory goes in at the edge's listener: the hub's backend gets one NDJSON
    /// line per document with only what the policy allows; a line that is not JSON and one over
    /// `maxLine` get a reply naming their line, and the lines after them still go through.
    @Test func documentsLeaveFilteredAndBadLinesAreReported() async throws {
        let backend = try await LineCollector.start()
        var pair = try await RelayPair(
            policy: """
                version: 1
                toPlane:
                  - service: inventory
                    class: metadata
                    fields: [node.name, node.labels.*, "pods[].name"]
                """)
        pair.hub.services = [.init(name: "inventory", backend: .tcp(host: "127.0.0.1", port: backend.port), tenants: ["demo"])]
        pair.hub.services[0].proxyProtocol = false  // the collector reads lines only (ProxyHeaderTests has the header)
        var listener = EdgeConfiguration.MetadataListener(name: "agents", listen: .tcp(host: "127.0.0.1", port: 0), service: "inventory")
        listener.maxLine = 256
        pair.edge.metadata = [listener]
        // Everything the edge sends, decrypted at the hub: what crossed the wire.
        let wire = NIOLockedValueBox<[UInt8]>([])
        pair.hubTap = { bytes in wire.withLockedValue { $0 += bytes.readableBytesView } }
        // Connected first: this test is about the lines, not about waiting for a hub.
        try await pair.run { hub, edge in
            // Every value is a canary: no log line may carry one, allowed or not (README "Logs and audit").
            let (name, token, broken) = (Canary.secret("node"), Canary.secret("env-token"), Canary.secret("broken-line"))
            let inventory = #"{"node":{"name":"\#(name)","labels":{"zone":"a"},"env":{"TOKEN":"\#(token)"}},"secrets":["k"],"pods":[{"name":"p","customer":"x"}]}"#
            let replies = try await LineCollector.exchange(
                with: edge.boundAddress(ofMetadataListener: "agents")!,
                lines: [inventory, "not json \(broken)", "", #"{"pad":""# + String(repeating: "z", count: 300) + #""}"#, #"{"node":{"name":"n2"}}"#])
            try #require(replies.count == 2, "\(replies)")
            #expect(replies[0].contains(#""line":2"#) && replies[0].contains("not valid JSON"))
            #expect(replies[1].contains(#""line":4"#) && replies[1].contains("maxLine"))
            let delivered = try await backend.lines(2)
            #expect(delivered == [#"{"node":{"name":"\#(name)","labels":{"zone":"a"}},"pods":[{"name":"p"}]}"#, #"{"node":{"name":"n2"}}"#])
            #expect(delivered.allSatisfy { !$0.contains(token) && !$0.contains("secrets") && !$0.contains("customer") })
            // The tunnel's plaintext (frames decoded, compressed payloads inflated) carried the
            // allowed fields and none of the others.
            let plain = try WireTap.plain(wire.withLockedValue { $0 })
            #expect(plain.contains(#""name":"\#(name)""#) && plain.contains(#""zone":"a""#))
            for removed in [token, "TOKEN", "secrets", "customer", broken] { #expect(!plain.contains(removed), "\(removed)") }

            // The hub keeps the agent's latest document, served by its admin API.
            let latest = try #require(hub.latestMetadata.document(of: pair.certificates.identity))
            #expect(latest.body.map { String(buffer: $0) } == #"{"node":{"name":"n2"}}"#)
            #expect(latest.service == "inventory")
            try await Self.withAdmin(of: hub) { port, token in
                let served = try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/metadata", token: token)
                #expect(served.status == 200, "\(served)")
                let json = try JSONSerialization.jsonObject(with: Data(served.body.utf8)) as? [String: Any]
                #expect((json?["document"] as? [String: Any])?["node"] as? [String: String] == ["name": "n2"], "\(served.body)")
                #expect(json?["service"] as? String == "inventory" && json?["octets"] as? Int == 22 && json?["receivedAt"] is String)
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-9/metadata", token: token).status == 404)
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/metadata").status == 401)
            }
        }
        try await backend.channel.close()
    }
}

extension MetadataRelayTests {
    /// Runs an admin listener of `hub` (as `tether hub` does) around `body`, with its port and an
    /// operator's token.
    static func withAdmin(of hub: HubRelay, _ body: (Int, String) async throws -> Void) async throws {
        let token = Canary.secret("operator-token")
        var configuration = AdminConfiguration(listen: .tcp(host: "127.0.0.1", port: 0))
        configuration.operators = [.init(id: "test", sha256: Digest.sha256(Array(token.utf8)))]
        let admin = AdminServer(
            configuration: configuration, source: hub, agents: hub, metrics: { [] }, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test.admin"))
        let services = ServiceGroup(services: [admin], logger: Logger(label: "test"))
        let running = Task { try await services.run() }
        let result: Result<Void, any Error>
        do {
            result = .success(try await body(try #require(try await admin.localAddress.port), token))
        } catch {
            result = .failure(error)
        }
        await services.triggerGracefulShutdown()
        try await running.value
        try result.get()
    }
}

/// A TCP server that gathers the lines it receives, and a client that sends lines and reads the
/// replies until the server closes.
struct LineCollector {
    let channel: any Channel
    let received: NIOLockedValueBox<String>
    var port: Int { self.channel.localAddress!.port! }

    static func start() async throws -> LineCollector {
        let received = NIOLockedValueBox("")
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.pipeline.addHandler(Gather(received)) }
            .bind(host: "127.0.0.1", port: 0).get()
        return LineCollector(channel: channel, received: received)
    }

    /// The first `count` complete lines received, once they are there (at most 10 s).
    func lines(_ count: Int) async throws -> [String] {
        for _ in 0..<1_000 {
            let lines = self.received.withLockedValue { $0 }.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            if lines.count >= count { return lines.prefix(count).map(String.init) }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("fewer than \(count) lines arrived: \(self.received.withLockedValue { $0 })")
        return []
    }

    private final class Gather: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<String>
        init(_ received: NIOLockedValueBox<String>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: self.unwrapInboundIn(data))
            self.received.withLockedValue { $0 += text }
        }
    }

    /// Sends each of `lines` with a line end, half-closes, and returns the lines that come back
    /// before the other end closes.
    static func exchange(with address: SocketAddress, lines: [String]) async throws -> [String] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: lines.map { $0 + "\n" }.joined()))
            outbound.finish()
            var text = ""
            for try await buffer in inbound { text += String(buffer: buffer) }
            return text.split(separator: "\n").map(String.init)
        }
    }
}
