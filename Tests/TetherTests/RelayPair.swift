import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TetherBench

@testable import TetherRelay

/// A hub and an edge in this process, with throw-away certificates and a policy, configured by
/// the test and run on event loops of their own (as in the daemons: other suites' loads on the
/// shared loops do not starve their handshakes).
struct RelayPair {
    let certificates: ThrowAwayCertificates
    var directory: String { self.certificates.directory }
    var hub: HubConfiguration
    var edge: EdgeConfiguration
    var edgeLogger = Logger(label: "tether.edge")
    /// Sees what the edge sends the hub, decrypted.
    var hubTap: (@Sendable (ByteBuffer) -> Void)?

    init(policy: String) async throws {
        self.certificates = try ThrowAwayCertificates()
        let directory = self.certificates.directory
        try policy.write(toFile: directory + "/policy.yaml", atomically: true, encoding: .utf8)
        self.hub = HubConfiguration(
            listen: .tcp(host: "127.0.0.1", port: try await RelayProcessTests.Site.freePort()),
            tls: RelayTLSFiles(certificate: directory + "/hub.pem", key: directory + "/hub.key", trustedCAs: [directory + "/ca.pem"]))
        self.edge = EdgeConfiguration(
            hubs: [self.hub.listen],
            tls: RelayTLSFiles(certificate: directory + "/edge.pem", key: directory + "/edge.key", trustedCAs: [directory + "/ca.pem"]),
            policy: directory + "/policy.yaml")
        self.edge.proxy = .none  // whatever this process's environment says
    }

    /// Runs both relays around `body`, after the edge's listeners are bound and — when
    /// `connected` — its connection to the hub is up; then drains them.
    func run<T>(connected: Bool = true, _ body: (HubRelay, EdgeRelay) async throws -> T) async throws -> T {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let hub = try HubRelay(configuration: self.hub, group: loops, inboundTap: self.hubTap)
        let edge = try EdgeRelay(configuration: self.edge, group: loops, logger: self.edgeLogger)
        let services = ServiceGroup(services: [hub, edge], logger: Logger(label: "test"))
        let running = Task { try await services.run() }
        let result: Result<T, any Error>
        do {
            try await edge.listening
            while connected && edge.connection == nil { try await Task.sleep(for: .milliseconds(10)) }
            result = .success(try await body(hub, edge))
        } catch {
            result = .failure(error)
        }
        await services.triggerGracefulShutdown()
        try await running.value
        try await loops.shutdownGracefully()
        self.certificates.remove()
        return try result.get()
    }
}
