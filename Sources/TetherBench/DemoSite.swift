import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What `tether demo` runs: `tether hub` and `tether edge` as separate processes (this executable,
/// run again) from configurations it writes beside throw-away certificates, and in this process
/// the programs around them — the plane's services behind the hub (an echo for commands, sinks
/// for bulk and logs, an inventory collector) and a node's status target behind the edge.
public final class DemoSite: Sendable {
    public let certificates: ThrowAwayCertificates
    private let hub: Process
    private let edge: Process
    private let servers: [any Channel]
    private let ports: Ports
    /// Octets each plane service received, by service.
    private let received: NIOLockedValueBox<[String: Int]>
    /// What the inventory service received, as text.
    private let inventory: NIOLockedValueBox<String>

    private struct Ports {
        var hub: Int
        var command: Int
        var bulk: Int
        var logs: Int
    }

    private var directory: String { self.certificates.directory }
    /// The edge's metadata listener.
    public var metadataSocket: String { self.directory + "/metadata.sock" }
    /// The hub listener through which the plane opens the node's `status` target.
    public var statusSocket: String { self.directory + "/node-1-status.sock" }
    public var hubLog: String { self.directory + "/hub.log" }
    public var edgeLog: String { self.directory + "/edge.log" }

    /// Starts the plane's services, writes the policy and both configurations, and starts both
    /// relays; returns once the edge is connected (the node's status target answers through the
    /// hub), with that answer.
    public static func start(group: any EventLoopGroup) async throws -> (DemoSite, status: String) {
        let certificates = try ThrowAwayCertificates()
        let received = NIOLockedValueBox([String: Int]())
        let inventory = NIOLockedValueBox("")
        let echo = try await Self.serve(group: group) { [Echo()] }
        let bulk = try await Self.serve(group: group) { [Count(service: "bulk", into: received)] }
        let logs = try await Self.serve(group: group) { [Count(service: "logs", into: received)] }
        let collector = try await Self.serve(group: group) { [Gather(into: inventory)] }
        let status = try await Self.serve(group: group) { [Status()] }
        let servers = [echo, bulk, logs, collector, status]
        let ports = Ports(
            hub: try await RelayDaemons.freePort(group: group), command: try await RelayDaemons.freePort(group: group),
            bulk: try await RelayDaemons.freePort(group: group), logs: try await RelayDaemons.freePort(group: group))
        let directory = certificates.directory
        func port(_ channel: any Channel) -> Int { channel.localAddress!.port! }
        try """
        version: 1
        toPlane:
          - {service: echo, class: command, opaque: true}
          - {service: bulk, class: bulk, opaque: true}
          - {service: logs, class: logs, opaque: true}
          - service: inventory
            class: metadata
            fields: [node.name, node.kernel, node.labels.*, "pods[].name", "pods[].phase"]
        fromPlane:
          - {service: status, class: bulk, opaque: true}
        """.write(toFile: directory + "/policy.yaml", atomically: true, encoding: .utf8)
        try """
        role: hub
        listen: 127.0.0.1:\(ports.hub)
        tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
        drain: {grace: 5s}
        audit: {file: hub-audit.jsonl}
        services:                  # stand-ins that speak no PROXY protocol
          - {name: echo, backend: 127.0.0.1:\(port(echo)), tenants: [demo], proxyProtocol: false}
          - {name: bulk, backend: 127.0.0.1:\(port(bulk)), tenants: [demo], proxyProtocol: false}
          - {name: logs, backend: 127.0.0.1:\(port(logs)), tenants: [demo], proxyProtocol: false}
          - {name: inventory, backend: 127.0.0.1:\(port(collector)), tenants: [demo], proxyProtocol: false}
        listeners:
          - {name: node-1-status, listen: "unix:\(directory)/node-1-status.sock", agent: tether://demo/node-1, target: status}
        """.write(toFile: directory + "/hub.yaml", atomically: true, encoding: .utf8)
        try """
        role: edge
        hubs: [127.0.0.1:\(ports.hub)]
        tls: {certificate: edge.pem, key: edge.key, ca: ca.pem}
        policy: policy.yaml
        dial: {initialBackoff: 50ms, maxBackoff: 500ms}
        audit: {file: edge-audit.jsonl}
        forwards:
          - {name: commands, listen: 127.0.0.1:\(ports.command), service: echo, class: command}
          - {name: bulk, listen: 127.0.0.1:\(ports.bulk), service: bulk, class: bulk}
          - {name: logs, listen: 127.0.0.1:\(ports.logs), service: logs, class: logs}
        exposes:
          - {name: status, target: 127.0.0.1:\(port(status))}
        metadata:
          - {name: agents, listen: "unix:\(directory)/metadata.sock", service: inventory}
        """.write(toFile: directory + "/edge.yaml", atomically: true, encoding: .utf8)
        let hub = try RelayDaemons.launch("hub", config: directory + "/hub.yaml", log: directory + "/hub.log")
        let edge = try RelayDaemons.launch("edge", config: directory + "/edge.yaml", log: directory + "/edge.log")
        let site = DemoSite(
            certificates: certificates, hub: hub, edge: edge, servers: servers, ports: ports, received: received,
            inventory: inventory)
        for _ in 0..<200 {
            if let answer = try? await site.openStatus(group: group), !answer.isEmpty { return (site, answer) }
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = await site.stop()
        throw RelayDaemonsError("the edge did not connect within 10 s (logs: \(directory)/hub.log, edge.log)")
    }

    private init(
        certificates: ThrowAwayCertificates, hub: Process, edge: Process, servers: [any Channel], ports: Ports,
        received: NIOLockedValueBox<[String: Int]>, inventory: NIOLockedValueBox<String>
    ) {
        self.certificates = certificates
        self.hub = hub
        self.edge = edge
        self.servers = servers
        self.ports = ports
        self.received = received
        self.inventory = inventory
    }

    // MARK: What the demo does

    /// The plane opens the node's `status` target through the hub's listener: what it answers.
    public func openStatus(group: any EventLoopGroup) async throws -> String {
        try await Self.exchange(group: group, unixSocket: self.statusSocket, sending: "")
    }

    /// Sends `lines` to the edge's metadata listener as NDJSON; returns its replies.
    public func sendMetadata(_ lines: [String], group: any EventLoopGroup) async throws -> [String] {
        let text = try await Self.exchange(group: group, unixSocket: self.metadataSocket, sending: lines.map { $0 + "\n" }.joined())
        return text.split(separator: "\n").map(String.init)
    }

    /// The first `count` lines the inventory service received, once there (at most 10 s).
    public func inventoryLines(_ count: Int) async throws -> [String] {
        for _ in 0..<1_000 {
            let lines = self.inventory.withLockedValue { $0 }.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            if lines.count >= count { return lines.prefix(count).map(String.init) }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw RelayDaemonsError("the inventory service received fewer than \(count) lines")
    }

    /// 64-octet round trips through the command forward (edge → hub → echo) until `deadline`:
    /// each sample in microseconds.
    public func commandRoundTrips(until deadline: NIODeadline, group: any EventLoopGroup) async throws -> Samples {
        let channel = try await ClientBootstrap(group: group).channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: self.ports.command).get()
        let samples = try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Samples> in
            let pingPong = PingPong(until: deadline, promise: channel.eventLoop.makePromise())
            do {
                try channel.pipeline.syncOperations.addHandler(pingPong)
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
            return pingPong.promise.futureResult
        }.get()
        try? await channel.close()
        return samples
    }

    /// Pushes `chunk` through the forward of `service` (`bulk` or `logs`) over `connections`
    /// connections until `deadline`.
    public func push(
        _ service: String, connections: Int, chunk: ByteBuffer, until deadline: NIODeadline, group: any EventLoopGroup
    ) async throws {
        let port = service == "logs" ? self.ports.logs : self.ports.bulk
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for _ in 0..<connections {
                tasks.addTask {
                    let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
                    try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
                        let pusher = TimedPusher(chunk: chunk, until: deadline, promise: channel.eventLoop.makePromise())
                        do {
                            try channel.pipeline.syncOperations.addHandler(pusher)
                        } catch {
                            return channel.eventLoop.makeFailedFuture(error)
                        }
                        return pusher.promise.futureResult
                    }.get()
                }
            }
            try await tasks.waitForAll()
        }
    }

    /// Octets the plane's `service` received so far.
    public func octetsReceived(by service: String) -> Int { self.received.withLockedValue { $0[service] ?? 0 } }

    /// The edge's audit lines so far with `event` (`plane-opened`, `removed`, `dropped`, …).
    /// Each record's fields (the edge writes its audit as JSON lines to `edge-audit.jsonl`,
    /// README "Logs and audit").
    public func edgeAudit(_ event: String) -> [[String: String]] {
        let log = (try? String(contentsOfFile: self.directory + "/edge-audit.jsonl", encoding: .utf8)) ?? ""
        return log.split(separator: "\n").compactMap { line -> [String: String]? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                object["event"] as? String == event
            else { return nil }
            return object.mapValues { "\($0)" }
        }
    }

    /// SIGTERM to both relays (they drain), then their exit statuses, edge first.
    public func stop() async -> (edge: Int32, hub: Int32) {
        for process in [self.edge, self.hub] where process.isRunning { process.terminate() }
        for process in [self.edge, self.hub] {
            while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        }
        for server in self.servers { try? await server.close() }
        return (self.edge.terminationStatus, self.hub.terminationStatus)
    }

    // MARK: Sockets

    private static func serve(
        group: any EventLoopGroup, _ handlers: @escaping @Sendable () -> [any ChannelHandler & Sendable]
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandlers(handlers()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Connects to a Unix socket, sends `text`, half-closes, and returns what comes back.
    private static func exchange(group: any EventLoopGroup, unixSocket: String, sending text: String) async throws -> String {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(unixDomainSocketPath: unixSocket) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            if !text.isEmpty { try await outbound.write(ByteBuffer(string: text)) }
            outbound.finish()
            var answer = ""
            for try await buffer in inbound { answer += String(buffer: buffer) }
            return answer
        }
    }
}

// MARK: The programs around the relays

/// The plane's command service: every octet back, then the FIN.
private final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event as? ChannelEvent == .inputClosed else { return }
        context.close(mode: .output, promise: nil)
    }
}

/// A plane service that counts what arrives.
private final class Count: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let service: String
    let received: NIOLockedValueBox<[String: Int]>
    init(service: String, into received: NIOLockedValueBox<[String: Int]>) {
        self.service = service
        self.received = received
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let octets = self.unwrapInboundIn(data).readableBytes
        self.received.withLockedValue { $0[self.service, default: 0] += octets }
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event as? ChannelEvent == .inputClosed else { return }
        context.close(promise: nil)
    }
}

/// The plane's inventory service: keeps the NDJSON it receives.
private final class Gather: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let text: NIOLockedValueBox<String>
    init(into text: NIOLockedValueBox<String>) { self.text = text }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: self.unwrapInboundIn(data))
        self.text.withLockedValue { $0 += text }
    }
}

/// The node's status target: a line about the node, then the FIN.
private final class Status: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelActive(context: ChannelHandlerContext) {
        let line = "node-1: kubelet active, 14 pods running, disk 61 % used"
        context.writeAndFlush(NIOAny(ByteBuffer(string: line)), promise: nil)
        context.close(mode: .output, promise: nil)
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event as? ChannelEvent == .inputClosed else { return }
        context.close(promise: nil)
    }
}

/// Writes `chunk` while the socket takes it, until `deadline`; then closes.
private final class TimedPusher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let chunk: ByteBuffer
    let deadline: NIODeadline
    let promise: EventLoopPromise<Void>
    private var pumping = false

    init(chunk: ByteBuffer, until deadline: NIODeadline, promise: EventLoopPromise<Void>) {
        self.chunk = chunk
        self.deadline = deadline
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) { self.pump(context: context) }
    func channelActive(context: ChannelHandlerContext) { self.pump(context: context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { self.pump(context: context) }
    func channelInactive(context: ChannelHandlerContext) { self.promise.succeed() }

    private func pump(context: ChannelHandlerContext) {
        guard !self.pumping, context.channel.isActive else { return }
        self.pumping = true  // a writability change inside a write must not re-enter
        defer { self.pumping = false }
        while context.channel.isWritable {
            guard .now() < self.deadline else {
                context.close(promise: nil)
                return
            }
            context.writeAndFlush(self.wrapOutboundOut(self.chunk), promise: nil)
        }
    }
}

/// 64-octet round trips on one connection until a deadline; each in microseconds.
private final class PingPong: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let deadline: NIODeadline
    let promise: EventLoopPromise<Samples>
    private var samples = Samples()
    private var sentAt = NIODeadline.now()
    private var pending = 0
    private let payload = ByteBuffer(repeating: UInt8(ascii: "c"), count: 64)

    init(until deadline: NIODeadline, promise: EventLoopPromise<Samples>) {
        self.deadline = deadline
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.send(context: context) }
    }

    private func send(context: ChannelHandlerContext) {
        self.sentAt = .now()
        self.pending = self.payload.readableBytes
        context.writeAndFlush(self.wrapOutboundOut(self.payload), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.pending -= self.unwrapInboundIn(data).readableBytes
        guard self.pending <= 0 else { return }
        let now = NIODeadline.now()
        self.samples.add(Double((now - self.sentAt).nanoseconds) / 1_000)
        if now < self.deadline { self.send(context: context) } else { self.promise.succeed(self.samples) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.fail(RelayDaemonsError("the command connection closed after \(self.samples.count) round trips"))
    }
}
