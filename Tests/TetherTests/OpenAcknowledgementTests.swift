import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherWire
import Testing

@testable import TetherRelay

/// OPENED (spec §5.8) between real relays: the hub learns that the edge accepted a stream and
/// connected its target — or why not — before it gives the stream to anyone (issue 18's front door
/// answers `200` only then).
@Suite(.timeLimit(.minutes(2))) struct OpenAcknowledgementTests {
    static let policy = """
        version: 1
        fromPlane:
          - {service: up, class: [bulk], opaque: true}
          - {service: down, class: [bulk], opaque: true}
          - {service: stuck, class: [bulk], opaque: true}
          - {service: unexposed, class: [bulk], opaque: true}
        """

    @Test func theHubLearnsWhetherTheEdgeReachedItsTarget() async throws {
        let echo = try await RelayProcessTests.echoServer()
        let stuck = try StuckListener()
        defer { stuck.close() }
        var pair = try await RelayPair(policy: Self.policy)
        pair.edge.exposes = [
            .init(name: "up", target: .tcp(host: "127.0.0.1", port: echo.localAddress!.port!)),
            .init(name: "down", target: .tcp(host: "127.0.0.1", port: try await RelayProcessTests.Site.freePort())),
            .init(name: "stuck", target: .tcp(host: "127.0.0.1", port: stuck.port)),
        ]
        try await pair.run { hub, edge in
            let agent = try #require(hub.connectedAgents.first)

            // Reached: acknowledged, and the stream carries octets both ways.
            let handle = try await hub.openStream(to: agent, target: "up", user: "alice@example.com", within: .seconds(30))
            #expect(try await handle.eventLoop.submit { handle.isAcknowledged }.get())
            let stream = TetherStream(handle)
            try await stream.write(ByteBuffer(string: "ping"))
            try await stream.finish()
            var echoed = ""
            for try await chunk in stream.chunks { echoed += String(buffer: chunk) }
            #expect(echoed == "ping")

            // Each refusal with its reason, as the front door will tell its client.
            await #expect(throws: HubRelay.OpenFailure.refused(.connectError)) {
                _ = try await hub.openStream(to: agent, target: "down", user: "alice", within: .seconds(30))
            }
            // Not in the customer's policy: the edge's policy refuses before any expose is looked up.
            await #expect(throws: HubRelay.OpenFailure.refused(.policyDenied)) {
                _ = try await hub.openStream(to: agent, target: "secret", user: "alice", within: .seconds(30))
            }
            await #expect(throws: HubRelay.OpenFailure.refused(.unknownService)) {
                _ = try await hub.openStream(to: agent, target: "unexposed", user: "alice", within: .seconds(30))
            }
            // A target whose connect never completes: no OPENED comes, and the hub gives up at its
            // deadline (the edge's own connect timeout is 10 s).
            await #expect(throws: HubRelay.OpenFailure.timedOut) {
                _ = try await hub.openStream(to: agent, target: "stuck", user: "alice", within: .seconds(1))
            }
            let stranger = try #require(TetherIdentity(tenant: "demo", agentID: "node-2"))
            await #expect(throws: HubRelay.OpenFailure.agentNotConnected) {
                _ = try await hub.openStream(to: stranger, target: "up", user: "alice", within: .seconds(30))
            }
        }
        try await echo.close()
    }
}

/// A TCP listener whose accept queue is full and never drained: Linux drops further SYNs, so a
/// connect to it neither completes nor fails until the connecting side gives up.
final class StuckListener: Sendable {
    let port: Int
    private let listener: Int32
    private let fillers: [Int32]

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && listen(listener, 0) == 0
                    && getsockname(listener, pointer, &length) == 0
            }
        }
        guard bound else { throw TetherTestError("cannot listen: errno \(errno)") }
        // A backlog of 0 holds one connection: fill it (and one more, for kernels that hold two).
        var fillers: [Int32] = []
        for _ in 0..<2 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
            }
            fillers.append(filler)
        }
        self.listener = listener
        self.fillers = fillers
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        for descriptor in self.fillers + [self.listener] { _ = Glibc.close(descriptor) }
    }
}

/// A port on 127.0.0.1 that refuses every connection for as long as it is held: bound, never
/// listening, so a connect gets RST and no other test's listener can take the port meanwhile (a
/// port bound and closed again can be: a dialer then reached some other test's listener).
final class RefusingPort: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
            }
        }
        guard bound else { throw TetherTestError("cannot bind: errno \(errno)") }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(self.descriptor)
    }
}
