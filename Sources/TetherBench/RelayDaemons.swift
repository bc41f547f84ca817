import Foundation
import NIOCore
import NIOPosix

/// The relay path as it is deployed, for `tether bench`: `tether hub` and `tether edge` as
/// separate processes from generated configuration files (this executable, run again), a local TCP
/// connection per stream into the edge's forward, the hub splicing each stream to a TCP sink in
/// the far-end process (`tether bench serve`'s plain sink).
struct RelayDaemons {
    let hub: Process
    let edge: Process
    /// The edge's forward: what the pushers connect to.
    let entrance: SocketAddress

    /// Writes the policy and both configurations into `directory` (which holds the throw-away
    /// certificates), starts both relays, and returns once the forward carries octets to the sink.
    static func start(directory: String, sinkPort: Int, group: any EventLoopGroup) async throws -> RelayDaemons {
        let hubPort = try await Self.freePort(group: group)
        let forwardPort = try await Self.freePort(group: group)
        try """
        version: 1
        toPlane:
          - {service: bench, class: [bulk], opaque: true}
        """.write(toFile: directory + "/bench-policy.yaml", atomically: true, encoding: .utf8)
        try """
        role: hub
        listen: 127.0.0.1:\(hubPort)
        tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
        services:                  # the sink reads the pusher's length first, as ssh -L's and stunnel's do
          - {name: bench, backend: 127.0.0.1:\(sinkPort), tenants: [demo], proxyProtocol: false}
        """.write(toFile: directory + "/bench-hub.yaml", atomically: true, encoding: .utf8)
        try """
        role: edge
        hubs: [127.0.0.1:\(hubPort)]
        tls: {certificate: edge.pem, key: edge.key, ca: ca.pem}
        policy: bench-policy.yaml
        dial: {initialBackoff: 50ms, maxBackoff: 500ms}
        forwards:
          - {name: bench, listen: 127.0.0.1:\(forwardPort), service: bench, class: bulk}
        """.write(toFile: directory + "/bench-edge.yaml", atomically: true, encoding: .utf8)
        let hub = try Self.launch("hub", config: directory + "/bench-hub.yaml", log: NSTemporaryDirectory() + "tether-bench-hub.log")
        let edge = try Self.launch("edge", config: directory + "/bench-edge.yaml", log: NSTemporaryDirectory() + "tether-bench-edge.log")
        let daemons = RelayDaemons(hub: hub, edge: edge, entrance: try SocketAddress(ipAddress: "127.0.0.1", port: forwardPort))
        // Ready once one small push goes through edge, hub and sink.
        for _ in 0..<200 {
            if (try? await RawTCP.push(group: group, to: daemons.entrance, octets: 1_024, chunk: ByteBuffer(repeating: 0, count: 1_024), tls: nil)) != nil {
                return daemons
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        daemons.stop()
        throw RelayDaemonsError("the relays did not carry a connection within 10 s (logs: \(NSTemporaryDirectory())tether-bench-*.log)")
    }

    static func launch(_ role: String, config: String, log: String) throws -> Process {
        let process = Process()
        process.executableURL = try BenchProcess.executable()
        process.arguments = [role, "--config", config]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        return process
    }

    static func freePort(group: any EventLoopGroup) async throws -> Int {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    /// SIGTERM to both (they drain), then waits for them.
    func stop() {
        for process in [self.edge, self.hub] where process.isRunning { process.terminate() }
        for process in [self.edge, self.hub] { process.waitUntilExit() }
    }
}

struct RelayDaemonsError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
