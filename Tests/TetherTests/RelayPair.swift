import Foundation
import Logging
import NIOConcurrencyHelpers
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
        // Port 0: the hub binds first and the edge dials the port it got (run), so no other test
        // can take the port in between.
        self.hub = HubConfiguration(
            listen: .tcp(host: "127.0.0.1", port: 0),
            tls: RelayTLSFiles(certificate: directory + "/hub.pem", key: directory + "/hub.key", trustedCAs: [directory + "/ca.pem"]))
        self.edge = EdgeConfiguration(
            hubs: [self.hub.listen],
            tls: RelayTLSFiles(certificate: directory + "/edge.pem", key: directory + "/edge.key", trustedCAs: [directory + "/ca.pem"]),
            policy: directory + "/policy.yaml")
        self.edge.proxy = .none  // whatever this process's environment says
    }

    /// Runs both relays around `body`, after the edge's listeners are bound and — when
    /// `connected` — its connection to the hub is up; then drains them. The hub is bound first and
    /// the edge dials the port it got; a relay that fails to start fails the run (never a wait).
    func run<T>(connected: Bool = true, _ body: (HubRelay, EdgeRelay) async throws -> T) async throws -> T {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let hub = try HubRelay(configuration: self.hub, group: loops, inboundTap: self.hubTap)
        let hubServices = ServiceGroup(services: [hub], logger: Logger(label: "test"))
        let hubRunning = Task { try await hubServices.run() }
        var edgeServices: ServiceGroup?
        var edgeRunning: Task<Void, any Error>?
        let result: Result<T, any Error>
        do {
            try await hub.listening
            var edgeConfiguration = self.edge
            edgeConfiguration.hubs = [.tcp(host: "127.0.0.1", port: try await hub.localAddress.port!)]
            let edge = try EdgeRelay(configuration: edgeConfiguration, group: loops, logger: self.edgeLogger)
            let services = ServiceGroup(services: [edge], logger: Logger(label: "test"))
            let stopped = NIOLockedValueBox(false)
            edgeServices = services
            edgeRunning = Task {
                defer { stopped.withLockedValue { $0 = true } }
                try await services.run()
            }
            try await edge.listening
            while connected && edge.connection == nil {
                guard !stopped.withLockedValue({ $0 }) else { throw TetherTestError("the edge stopped before it connected") }
                try await Task.sleep(for: .milliseconds(10))
            }
            result = .success(try await body(hub, edge))
        } catch {
            result = .failure(error)
        }
        await edgeServices?.triggerGracefulShutdown()
        try await edgeRunning?.value
        await hubServices.triggerGracefulShutdown()
        try await hubRunning.value
        try await loops.shutdownGracefully()
        self.certificates.remove()
        return try result.get()
    }
}
