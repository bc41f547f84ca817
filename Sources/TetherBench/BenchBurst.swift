import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherRelay
import TetherTLS
import TetherWire

/// `tether bench burst`: does a hub's memory go back after a burst? A real `tether hub` process
/// with a service whose backend accepts and never reads; N connections (of one identity or of N)
/// each send toward it until their windows are full, so the hub holds what the windows let in;
/// then they close. Prints the hub's resident memory before, at the peak and after (README
/// "Fleet scale").
struct BenchBurst: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "burst", abstract: "A burst of full windows toward a backend that never reads: the hub's memory before, at the peak, after.")

    @Option(help: "Connections in the burst.")
    var connections: Int = 40

    @Option(help: "Identities they belong to (1: all of one identity; the hub's connectionsPerIdentity is raised to fit).")
    var identities: Int = 1

    @Option(help: "Seconds to wait after the burst closed before the last reading.")
    var settle: Double = 10

    @Flag(help: "Print one JSON object at the end.")
    var json = false

    struct Report: Encodable {
        var connections: Int
        var identities: Int
        var hub_rss_baseline_mib: Double
        var hub_rss_peak_mib: Double
        var hub_rss_after_mib: Double
        var after_over_baseline: Double
    }

    func run() async throws {
        guard self.connections > 0, (1...self.connections).contains(self.identities) else {
            throw ValidationError("--connections must be positive and --identities within 1…connections")
        }
        let certificates = try ThrowAwayCertificates()
        defer { certificates.remove() }
        let directory = certificates.directory
        for index in 1..<self.identities {
            try certificates.issueEdge(TetherIdentity(tenant: "demo", agentID: "burst-\(index)")!, named: "edge-\(index)")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // The backend takes connections and never reads them, with a small receive buffer, so
        // that what the windows let in waits in the hub.
        let backend = try await ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.so_rcvbuf), value: 4_096)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try await RelayDaemons.freePort(group: group)
        let perIdentity = (self.connections + self.identities - 1) / self.identities
        try """
        role: hub
        listen: 127.0.0.1:\(port)
        tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
        log: {level: warning}
        limits: {connectionsPerIdentity: \(min(64, max(2, perIdentity)))}
        services:
          - {name: sink, backend: 127.0.0.1:\(backend.localAddress!.port!), tenants: [demo], proxyProtocol: false}
        """.write(toFile: directory + "/burst-hub.yaml", atomically: true, encoding: .utf8)
        let hub = try RelayDaemons.launch("hub", config: directory + "/burst-hub.yaml", log: directory + "/burst-hub.log")
        defer { if hub.isRunning { hub.terminate(); hub.waitUntilExit() } }
        let probe = ProcessProbe(pid: hub.processIdentifier)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let contexts = try (0..<self.identities).map { index in
            try TLSContext(
                configuration: TLSConfiguration(
                    role: .client, certificateChainFile: directory + (index == 0 ? "/edge.pem" : "/edge-\(index).pem"),
                    privateKeyFile: directory + (index == 0 ? "/edge.key" : "/edge-\(index).key"),
                    trustedCAFiles: [directory + "/ca.pem"], serverName: "127.0.0.1"))
        }
        // One connection and stream first, so the baseline includes the hub's warm state.
        for _ in 0..<200 where (try? await ClientBootstrap(group: group).connect(to: address).get().close()) == nil {
            try await Task.sleep(for: .milliseconds(50))
        }
        let warm = try await TetherTransport.dial(group: group, to: address, tls: contexts[0], configuration: .init(role: .dialer))
        try await warm.openStream(service: "sink", class: .bulk).write(ByteBuffer(repeating: 1, count: 1_024))
        await warm.close()
        try await Task.sleep(for: .seconds(2))
        let baseline = Double(probe.residentBytes) / 1_048_576
        self.say(String(format: "hub RSS before the burst: %.1f MiB", baseline))

        var burst: [TetherConnection] = []
        for index in 0..<self.connections {
            burst.append(
                try await TetherTransport.dial(
                    group: group, to: address, tls: contexts[index % self.identities], configuration: .init(role: .dialer)))
        }
        // Each connection writes 5 MiB on 16 streams — each stream's window is 256 KiB, the
        // connection's 4 MiB; a write waits while a window is full.
        let chunk = ByteBuffer(repeating: 0x42, count: 64 << 10)
        let writing = burst
        let writers = Task {
            await withTaskGroup(of: Void.self) { writes in
                for connection in writing {
                    for _ in 0..<16 {
                        writes.addTask {
                            guard let stream = try? await connection.openStream(service: "sink", class: .bulk) else { return }
                            for _ in 0..<5 { guard (try? await stream.write(chunk)) != nil else { return } }
                        }
                    }
                }
            }
        }
        var peak = 0.0
        for _ in 0..<10 {
            try await Task.sleep(for: .milliseconds(500))
            peak = max(peak, Double(probe.residentBytes) / 1_048_576)
        }
        self.say(String(format: "hub RSS with the windows full: %.1f MiB (%d connections, %d identities)", peak, self.connections, self.identities))
        for connection in burst { await connection.close() }
        writers.cancel()
        var after = 0.0
        let clock = ContinuousClock()
        let closed = clock.now
        while clock.now - closed < .seconds(self.settle) {
            try await Task.sleep(for: .seconds(1))
            after = Double(probe.residentBytes) / 1_048_576
            self.say(String(format: "  %.0f s after they closed: %.1f MiB", Double((clock.now - closed).components.seconds), after))
        }
        self.say(String(format: "hub RSS after: %.1f MiB, %.2f× the baseline", after, after / baseline))
        if self.json {
            let report = Report(
                connections: self.connections, identities: self.identities, hub_rss_baseline_mib: baseline,
                hub_rss_peak_mib: peak, hub_rss_after_mib: after, after_over_baseline: after / baseline)
            print(String(decoding: try JSONEncoder().encode(report), as: UTF8.self))
        }
        try await backend.close()
    }

    private func say(_ line: String) { ProgressLine.say(line, json: self.json) }
}
