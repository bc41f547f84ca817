import ArgumentParser
import NIOCore
import NIOPosix
import TetherBench

/// `tether demo`: `tether hub` and `tether edge` as separate processes on loopback, from
/// configurations it writes beside throw-away certificates (``DemoSite``); the plane opens a
/// node's target, metadata goes through the node's policy, and commands run under bulk and log
/// load; a summary of each.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a hub and an edge as processes on loopback, carry every class through them, and print a summary.")

    @Option(help: "How long the load runs, in seconds.")
    var seconds: Double = 5

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        print("Starting `tether hub` and `tether edge` on 127.0.0.1 (mutual TLS 1.3, throw-away certificates) …")
        let (site, status) = try await DemoSite.start(group: group)
        do {
            try await self.show(site, status: status, group: group)
        } catch {
            _ = await site.stop()
            print("hub log: \(site.hubLog)\nedge log: \(site.edgeLog)")
            throw error
        }
        let (edge, hub) = await site.stop()
        print("\nSIGTERM: both relays drained and exited (edge \(edge), hub \(hub)).")
        site.certificates.remove()
        guard edge == 0, hub == 0 else { throw ExitCode.failure }
    }

    private func show(_ site: DemoSite, status: String, group: any EventLoopGroup) async throws {
        print("hub: \(site.certificates.directory)/hub.yaml, edge: edge.yaml beside it (identity \(site.certificates.identity))")

        print("\n1. The plane opens a target the node exposes (hub listener → hub → edge → 127.0.0.1 status):")
        print("   answer: \(status)")
        if let audit = site.edgeAudit("plane-opened").first {
            print("   the edge audited it: service \(audit["service"] ?? "-"), user \(audit["user"] ?? "-")")
        }

        print("\n2. Metadata through the node's policy (edge metadata listener → hub → the plane's inventory service):")
        let inventory = #"{"node":{"name":"node-1","kernel":"6.1.0","labels":{"zone":"a"},"env":{"API_TOKEN":"tether-canary-s3cr3t"}},"#
            + #""secrets":["kubeadm-certs"],"pods":[{"name":"web-0","phase":"Running","customer":{"card":"4111"}}]}"#
        let replies = try await site.sendMetadata([inventory, #"{"node": oops}"#], group: group)
        let arrived = try await site.inventoryLines(1)
        print("   sent:    \(inventory)")
        print("   arrived: \(arrived[0])")
        if let audit = site.edgeAudit("removed").first {
            print("   removed on the node, never sent (the edge's audit, paths only): \(audit["paths"] ?? "-")")
        }
        for reply in replies { print("   a malformed line was answered: \(reply)") }

        print("\n3. Commands while bulk and logs saturate the tunnel (64-octet round trips, command forward → hub → echo):")
        let idle = try await site.commandRoundTrips(until: .now() + .seconds(1), group: group)
        let started = NIODeadline.now()
        let deadline = started + .nanoseconds(Int64(self.seconds * 1e9))
        // The load's own event loop: the round trips' client and the echo do not queue behind it.
        let load = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { load.shutdownGracefully { _ in } }
        async let bulk: Void = site.push("bulk", connections: 2, chunk: Workloads.randomBytes(65_536), until: deadline, group: load)
        async let logs: Void = site.push("logs", connections: 2, chunk: Self.logLines(), until: deadline, group: load)
        let loaded = try await site.commandRoundTrips(until: deadline, group: group)
        try await bulk
        try await logs
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        print("   idle:            p50 \(Int(idle.percentile(50))) µs, p99 \(Int(idle.percentile(99))) µs (\(idle.count) round trips)")
        print("   under load:      p50 \(Int(loaded.percentile(50))) µs, p99 \(Int(loaded.percentile(99))) µs (\(loaded.count) round trips)")
        let commandOctets = loaded.count * 64
        let bulkOctets = site.octetsReceived(by: "bulk")
        let logOctets = site.octetsReceived(by: "logs")
        let total = commandOctets + bulkOctets + logOctets
        print("\n   class    connections         octets     MiB/s   share")
        print(Self.row("COMMAND", 1, commandOctets, elapsed, total))
        print(Self.row("BULK", 2, bulkOctets, elapsed, total))
        print(Self.row("LOGS", 2, logOctets, elapsed, total))
    }

    /// The value of `name=` in a log line of swift-log's stream handler.
    private static func row(_ name: String, _ streams: Int, _ bytes: Int, _ seconds: Double, _ total: Int) -> String {
        let mib = Double(bytes) / 1_048_576 / seconds
        let share = total > 0 ? 100 * Double(bytes) / Double(total) : 0
        return "   " + name.padding(toLength: 9, withPad: " ", startingAt: 0)
            + String(format: " %8ld %16ld %9.1f %6.1f %%", streams, bytes, mib, share)
    }

    /// A batch of syslog-style lines: one LOGS message.
    static func logLines() -> ByteBuffer {
        var text = ""
        for index in 0..<100 {
            text += "Nov 27 00:00:\(10 + index % 50) node-1 kubelet[1234]: I1127 pod_workers.go:\(900 + index)] "
            text += "\"SyncLoop (PLEG): event for pod\" pod=\"default/web-\(index % 7)\"\n"
        }
        return ByteBuffer(string: text)
    }
}
