import Foundation
import NIOCore
import NIOPosix
import Testing

/// SIGHUP (README "Reloading"): the relays read their configuration file again and put in force
/// what changed, with real `tether` processes and connections held open across the reload.
extension RelayProcessTests {
    /// A connection through a relay, held open across a reload.
    struct Held {
        var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

        /// Sends `octets` of the pattern and reads them back: true when all came back intact,
        /// false when the connection ended (or was reset) first.
        mutating func exchange(_ octets: Int) async -> Bool {
            do {
                try await self.outbound.write(ByteBuffer(bytes: RelayProcessTests.pattern[0..<octets]))
                var received: [UInt8] = []
                while received.count < octets {
                    guard let buffer = try await self.inbound.next() else { return false }
                    received += buffer.readableBytesView
                }
                return received[...] == RelayProcessTests.pattern[0..<octets]
            } catch {
                return false
            }
        }
    }

    /// Connects to the Unix socket at `path` and runs `body` with the connection open.
    static func holding<T: Sendable>(_ path: String, _ body: (inout Held) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var held = Held(inbound: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&held)
        }
    }

    static func edit(_ site: Site, _ file: String, _ change: (String) -> String) throws {
        let path = site.directory + "/" + file
        try change(try String(contentsOfFile: path, encoding: .utf8)).write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The site's policy without its fromPlane rule: the plane may open nothing on the node.
    static func tightenPolicy(_ site: Site) throws {
        try Self.edit(site, "policy.yaml") { $0.components(separatedBy: "fromPlane:")[0] }
    }

    /// Sends SIGHUP to `process` and waits for the `count`th line of its log containing `marker`.
    static func hangUp(_ process: Process, _ site: Site, role: String, until marker: String, count: Int = 1) async throws {
        Foundation.kill(process.processIdentifier, SIGHUP)
        let log = site.directory + "/\(role).log"
        let reloaded = try await Self.waitForLine(in: log, count: count) { $0.contains(marker) }
        #expect(reloaded, "no \"\(marker)\" in \(role).log: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// Whether `path` holds `count` lines satisfying `matches` within 30 s.
    static func waitForLine(in path: String, count: Int, _ matches: (Substring) -> Bool) async throws -> Bool {
        for _ in 0..<300 {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if text.split(separator: "\n").filter(matches).count >= count { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// spec/POLICY.md §7.3 through SIGHUP: the customer takes the plane's access away; the stream
    /// the plane holds open on the node is reset at once, while a forward already open goes on
    /// and a forward the same reload adds starts carrying.
    @Test(.timeLimit(.minutes(2)))
    func sighupWithATightenedPolicyResetsAnExposedStreamWhileAForwardGoesOn() async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)
        try await Self.waitUntilCarried(site.plane)
        let added = site.directory + "/added.sock"
        let (exposedAfter, forwardedAfter) = try await Self.holding(site.plane) { exposed in
            try await Self.holding(site.forward) { forwarded in
                #expect(await exposed.exchange(1_000))
                #expect(await forwarded.exchange(1_000))
                try Self.tightenPolicy(site)
                try Self.edit(site, "edge.yaml") {
                    $0.replacingOccurrences(
                        of: "exposes:", with: "  - {name: added, listen: \"unix:\(added)\", service: echo, class: bulk}\nexposes:")
                }
                try await Self.hangUp(edge, site, role: "edge", until: "configuration reloaded")
                return (await exposed.exchange(1_000), await forwarded.exchange(65_536))
            }
        }
        #expect(!exposedAfter, "the plane's stream outlived the policy that allowed it")
        #expect(forwardedAfter, "the forward did not go on")
        let refused = try await Self.roundTrip(site.plane, octets: 1_000)
        #expect(refused?.count ?? 0 == 0)
        try await Self.waitUntilCarried(added)
        let log = try String(contentsOfFile: site.directory + "/edge.log", encoding: .utf8)
        #expect(log.contains("refused by the policy: expose local-echo"))
        try await Self.kill(edge)
        try await Self.kill(hub)
        try await echo.close()
    }

    /// A configuration that does not parse, sent with a tightened policy, changes nothing: the
    /// error names the line, and the plane's open stream, new streams and forwards all go on.
    @Test(.timeLimit(.minutes(2)))
    func aBrokenConfigurationOnSIGHUPChangesNothing() async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)
        try await Self.waitUntilCarried(site.plane)
        let after = try await Self.holding(site.plane) { exposed in
            #expect(await exposed.exchange(1_000))
            try Self.tightenPolicy(site)
            try Self.edit(site, "edge.yaml") { $0.replacingOccurrences(of: "class: bulk}", with: "clas: bulk}") }
            try await Self.hangUp(edge, site, role: "edge", until: "configuration not reloaded")
            return await exposed.exchange(1_000)
        }
        #expect(after, "a broken configuration changed the policy in force")
        let log = try String(contentsOfFile: site.directory + "/edge.log", encoding: .utf8)
        #expect(log.contains("edge.yaml:7:"), "the error does not name the line")
        #expect(log.contains("clas"))
        #expect(!log.contains("configuration reloaded"))
        let exposed = try await Self.roundTrip(site.plane, octets: 100_000)
        #expect(exposed?.count == 100_000)
        let forwarded = try await Self.roundTrip(site.forward, octets: 100_000)
        #expect(forwarded?.count == 100_000)
        try await Self.kill(edge)
        try await Self.kill(hub)
        try await echo.close()
    }

    /// The hub on SIGHUP: a listener that cannot be bound fails the whole reload (nothing else
    /// changes); then a tenant taken off a service's list has its open stream reset and new ones
    /// refused, and a listener added starts accepting.
    @Test(.timeLimit(.minutes(2)))
    func sighupReloadsTheHubsServicesAndListeners() async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)
        let second = site.directory + "/plane2.sock"
        let listener = "\n  - {name: plane2, listen: \"unix:\(second)\", agent: tether://demo/node-1, target: local-echo}\n"
        let (afterFailed, afterReload) = try await Self.holding(site.forward) { forwarded in
            #expect(await forwarded.exchange(1_000))
            // The echo server's port is taken: the reload fails, the tenant list stays.
            try Self.edit(site, "hub.yaml") {
                $0.replacingOccurrences(of: "tenants: [demo]", with: "tenants: [other]") + listener
                    + "  - {name: taken, listen: 127.0.0.1:\(site.echoPort), agent: tether://demo/node-1, target: local-echo}\n"
            }
            try await Self.hangUp(hub, site, role: "hub", until: "Address already in use")
            let afterFailed = await forwarded.exchange(1_000)
            try Self.edit(site, "hub.yaml") { $0.components(separatedBy: "  - {name: taken")[0] }
            try await Self.hangUp(hub, site, role: "hub", until: "configuration reloaded")
            return (afterFailed, await forwarded.exchange(1_000))
        }
        #expect(afterFailed, "a failed reload changed the tenant list")
        #expect(!afterReload, "a stream outlived its tenant's place on the service's list")
        let refused = try await Self.roundTrip(site.forward, octets: 1_000)
        #expect(refused?.count ?? 0 == 0)
        try await Self.waitUntilCarried(second)
        try await Self.kill(edge)
        try await Self.kill(hub)
        try await echo.close()
    }
}
