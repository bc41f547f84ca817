import ArgumentParser
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherBench
import TetherRelay
import TetherSession
import TetherTLS
import TetherWire

/// `tether demo`: a hub and an edge in one process on loopback, streams of every class at once,
/// and a summary.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a hub and an edge on loopback with streams of every class, and print a summary.")

    @Option(help: "How long the streams run, in seconds.")
    var seconds: Double = 5

    func run() async throws {
        let certificates = try ThrowAwayCertificates()
        defer { certificates.remove() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let received = NIOLockedValueBox([StreamClass: Int]())
        let (hubConnections, hubConnection) = AsyncStream<TetherConnection>.makeStream()
        // The hub: mutual TLS, then it serves what edges open (sinks that count octets per class).
        let hub = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: try TLSContextStore(configuration: certificates.hub),
            configuration: .init(role: .acceptor),
            inboundStreamHandler: { handle in
                let streamClass = handle.streamClass
                Workloads.serve(handle) { chunk in
                    received.withLockedValue { $0[streamClass, default: 0] += chunk.readableBytes }
                }
            },
            onConnection: { hubConnection.yield($0) })
        // The edge dials the hub, verifies its certificate for 127.0.0.1, and serves `echo` for the
        // hub's commands.
        let edge = try await TetherTransport.dial(
            group: group, to: hub.localAddress!, tls: try TLSContext(configuration: certificates.edge),
            configuration: .init(role: .dialer), inboundStreamHandler: { Workloads.serve($0) })
        var connections = hubConnections.makeAsyncIterator()
        guard let plane = await connections.next() else { throw ValidationError("the hub saw no connection") }
        print("hub on \(hub.localAddress!) (mutual TLS 1.3, ALPN tether/1)")
        print("edge connected; the hub verified its identity from the certificate: \(plane.peerIdentity.map { "\($0)" } ?? "none")")
        print("\(self.seconds) s of traffic in every class …")

        let stop = NIOLockedValueBox(false)
        let shouldStop: @Sendable () -> Bool = { stop.withLockedValue { $0 } }
        let plan: [(streamClass: StreamClass, service: String, streams: Int, chunk: ByteBuffer)] = [
            (.metadata, "metadata", 2, Self.metadataDocument()),
            (.logs, "logs", 4, Self.logLines()),
            (.bulk, "sink", 2, Workloads.randomBytes(65_536)),
        ]
        var pushes: [EventLoopFuture<Int>] = []
        for entry in plan {
            for _ in 0..<entry.streams {
                let handle = try await edge.openStream(service: entry.service, class: entry.streamClass).handle
                let messages = entry.streamClass != .bulk
                pushes.append(
                    handle.eventLoop.flatSubmit {
                        Workloads.push(handle, chunk: entry.chunk, octets: nil, endMessage: messages, stop: shouldStop)
                    })
            }
        }

        // The plane's commands to the node: 64-octet round trips while everything else runs.
        let command = try await plane.openStream(service: "echo", class: .command).handle
        let started = NIODeadline.now()
        let deadline = started + .nanoseconds(Int64(self.seconds * 1e9))
        let payload = ByteBuffer(repeating: UInt8(ascii: "c"), count: 64)
        let latencies = try await command.eventLoop.flatSubmit {
            Workloads.pingPong(command, payload: payload, until: deadline)
        }.get()
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        let counts = received.withLockedValue { $0 }
        stop.withLockedValue { $0 = true }
        for push in pushes { _ = try? await push.get() }

        let commandBytes = latencies.count * 64
        let total = counts.values.reduce(commandBytes, +)
        print("")
        print("class      streams         bytes     MiB/s   share")
        print(Self.row("COMMAND", 1, commandBytes, elapsed, total))
        for entry in plan {
            print(Self.row(entry.streamClass.name, entry.streams, counts[entry.streamClass] ?? 0, elapsed, total))
        }
        print("")
        print(
            "command round trip, 64 B each way, \(latencies.count) samples while every class was busy: "
                + "p50 \(Int(latencies.percentile(50))) µs, p99 \(Int(latencies.percentile(99))) µs")
        await edge.close()
        try await hub.close()
        try await group.shutdownGracefully()
    }

    private static func row(_ name: String, _ streams: Int, _ bytes: Int, _ seconds: Double, _ total: Int) -> String {
        let mib = Double(bytes) / 1_048_576 / seconds
        let share = total > 0 ? 100 * Double(bytes) / Double(total) : 0
        return name.padding(toLength: 9, withPad: " ", startingAt: 0)
            + String(format: " %8ld %13ld %9.1f %6.1f %%", streams, bytes, mib, share)
    }

    /// A node-inventory-like JSON document: one METADATA message.
    static func metadataDocument() -> ByteBuffer {
        let fields = (0..<40).map { #""field\#($0)": {"value": \#($0 * 37), "unit": "bytes", "ok": true}"# }
        return ByteBuffer(string: "{" + fields.joined(separator: ", ") + "}\n")
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
