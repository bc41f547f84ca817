import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherRelay
import TetherTLS
import TetherWire

/// `tether bench fleet`: a real `tether hub` process and N real edges (``EdgeRelay``, each with its
/// own certificate, dialer and shipped backoff) in this process, over mutual TLS on loopback
/// (README "Fleet scale"). It measures what a hub pays per idle edge (user-space memory and the
/// kernel's socket memory apart), the hub's CPU while the fleet idles, how fast the fleet connects,
/// and a reconnect storm: the hub killed under the whole fleet and started again.
struct BenchFleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Many real edges against one real hub: memory and CPU per idle edge, handshake rate, a reconnect storm.")

    @Option(help: "Edges to connect, each with its own certificate and connection.")
    var edges: Int = 10_000

    @Option(help: "Seconds the connected fleet idles while the hub's CPU is measured.")
    var idleSeconds: Double = 60

    @Option(help: "Connections being set up at once while the fleet first connects.")
    var connecting: Int = 256

    @Option(help: "The hub's limits.handshakesPerSecond (default: the hub's shipped default).")
    var handshakesPerSecond: Int?

    @Option(help: "Event-loop threads for the edges.")
    var threads: Int = 2

    @Option(help: "Seconds of ping round trips before the storm (the figure the storm's is compared with).")
    var pingSeconds: Double = 10

    @Flag(help: "Skip the reconnect storm.")
    var noStorm = false

    @Flag(help: "Print one JSON object with every figure at the end.")
    var json = false

    struct Report: Encodable {
        var edges: Int
        var hub_rss_baseline_kib: Double = 0
        var hub_rss_idle_kib: Double = 0
        var hub_kib_per_edge: Double = 0
        var kernel_tcp_kib_per_connection: Double = 0
        var hub_idle_cpu_percent: Double = 0
        var connect_seconds: Double = 0
        var handshakes_per_second: Double = 0
        var handshakes_per_second_peak: Double = 0
        var ping_p50_us_before: Double?
        var ping_p99_us_before: Double?
        var storm_seconds_to_all_back: Double?
        var storm_edges_not_back: Int?
        var storm_rate_per_second: [Int]?
        var storm_ping_p50_us: Double?
        var storm_ping_p99_us: Double?
        /// Edges not back when the storm's wait ended, by their dialer's last error.
        var storm_not_back_reasons: [String: Int]?
    }

    func run() async throws {
        guard self.edges > 0, self.connecting > 0 else { throw ValidationError("--edges and --connecting must be positive") }
        let limit = try FileDescriptorLimit.raise(toAtLeast: self.edges + 1_024)
        guard limit >= self.edges + 256 else {
            throw ValidationError("RLIMIT_NOFILE is \(limit); \(self.edges) edges need about \(self.edges + 256) (run as root or raise it)")
        }
        var report = Report(edges: self.edges)
        let certificates = try ThrowAwayCertificates()
        defer { certificates.remove() }
        let clock = ContinuousClock()

        var started = clock.now
        let fleet = try FleetFiles(certificates: certificates, edges: self.edges)
        self.say("issued \(self.edges) edge certificates in \(Self.seconds(clock.now - started)) s")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let port = try await RelayDaemons.freePort(group: group)
        let hubConfiguration = try fleet.writeHubConfiguration(port: port, handshakesPerSecond: self.handshakesPerSecond)
        var hub = try await Self.startHub(config: hubConfiguration, log: fleet.hubLog, port: port, group: group)
        defer { if hub.isRunning { hub.signal(SIGTERM); hub.waitUntilExit() } }
        try await Task.sleep(for: .seconds(1))
        report.hub_rss_baseline_kib = Double(ProcessProbe(pid: hub.processIdentifier).residentBytes) / 1_024
        let socketsBefore = ProcessProbe.kernelTCPMemoryBytes()

        started = clock.now
        let relays = try (0..<self.edges).map { try fleet.edge($0, hubPort: port, group: group) }
        self.say("built \(self.edges) edges in \(Self.seconds(clock.now - started)) s")

        // Connect, at most `connecting` setting up at once; count arrivals per second.
        var tasks: [Task<Void, Never>] = []
        var waiting: [Int] = []
        var next = 0
        var arrivals: [Int] = []
        var second = clock.now
        var arrivedThisSecond = 0
        started = clock.now
        while next < relays.count || !waiting.isEmpty {
            while waiting.count < self.connecting && next < relays.count {
                let relay = relays[next]
                tasks.append(Task { try? await relay.run() })
                waiting.append(next)
                next += 1
            }
            try await Task.sleep(for: .milliseconds(5))
            let before = waiting.count
            waiting.removeAll { relays[$0].connection != nil }
            arrivedThisSecond += before - waiting.count
            if clock.now - second >= .seconds(1) {
                arrivals.append(arrivedThisSecond)
                arrivedThisSecond = 0
                second = clock.now
            }
            if clock.now - started > .seconds(300) { throw ValidationError("the fleet did not connect within 300 s (\(fleet.hubLog))") }
        }
        let connectTime = clock.now - started
        report.connect_seconds = Self.seconds(connectTime)
        report.handshakes_per_second = Double(self.edges) / report.connect_seconds
        report.handshakes_per_second_peak = Double(arrivals.max() ?? self.edges)
        self.say(
            String(
                format: "connected %d edges in %.1f s: %.0f handshakes/s (peak second %.0f); per second: %@", self.edges,
                report.connect_seconds, report.handshakes_per_second, report.handshakes_per_second_peak,
                arrivals.map(String.init).joined(separator: " ")))

        // Every edge past SETTINGS and one keepalive exchange (15 s apart, shipped default), then idle.
        self.say("waiting until every edge has had a keepalive PING answered (dial.keepalive, 15 s)")
        try await Self.untilEveryEdgeHadAKeepalive(relays)
        let probe = ProcessProbe(pid: hub.processIdentifier)
        let cpuBefore = probe.cpuSeconds
        let idleStart = clock.now
        try await Task.sleep(for: .seconds(self.idleSeconds))
        let cpu = probe.cpuSeconds - cpuBefore
        report.hub_idle_cpu_percent = 100 * cpu / Self.seconds(clock.now - idleStart)
        report.hub_rss_idle_kib = Double(probe.residentBytes) / 1_024
        report.hub_kib_per_edge = (report.hub_rss_idle_kib - report.hub_rss_baseline_kib) / Double(self.edges)
        report.kernel_tcp_kib_per_connection = Double(ProcessProbe.kernelTCPMemoryBytes() - socketsBefore) / 1_024 / Double(self.edges)
        let connected = relays.filter { $0.connection != nil }.count
        self.say(
            String(
                format: "idle %.0f s with %d edges connected: hub CPU %.2f %% of a core; hub RSS %.1f MiB (baseline %.1f MiB): "
                    + "%.1f KiB per edge; kernel TCP memory %.1f KiB per connection (both ends)",
                self.idleSeconds, connected, report.hub_idle_cpu_percent, report.hub_rss_idle_kib / 1_024,
                report.hub_rss_baseline_kib / 1_024, report.hub_kib_per_edge, report.kernel_tcp_kib_per_connection))

        let before = try await Self.pings(relays, for: .seconds(self.pingSeconds))
        report.ping_p50_us_before = before.count > 0 ? before.percentile(50) : nil
        report.ping_p99_us_before = before.count > 0 ? before.percentile(99) : nil
        self.say(String(format: "ping round trip through the hub, fleet idle: p50 %.0f µs p99 %.0f µs (%d pings)", before.percentile(50), before.percentile(99), before.count))

        if !self.noStorm {
            let killedAt = Date()
            hub.signal(SIGKILL)
            hub.waitUntilExit()
            let killed = clock.now
            self.say("hub killed under \(self.edges) edges; starting it again")
            hub = try await Self.startHub(config: hubConfiguration, log: fleet.hubLog, port: port, group: group)
            let back = NIOLockedValueBox(Set<Int>())
            let pinging = Task { try await Self.pings(relays, for: .seconds(120), among: back) }
            var rate: [Int] = []
            var counted = 0
            while back.withLockedValue({ $0.count }) < self.edges && clock.now - killed < .seconds(120) {
                try await Task.sleep(for: .seconds(1))
                // Back: connected again since the kill (a new channel may reuse the old one's address).
                let now = relays.indices.filter { index in
                    let status = relays[index].dialerStatus
                    return status.state == .connected && (status.connectedSince ?? .distantPast) > killedAt
                }
                back.withLockedValue { $0 = Set(now) }
                rate.append(now.count - counted)
                counted = now.count
                self.say("  \(rate.count) s after the kill: \(counted) back (+\(rate.last!))")
            }
            let recovered = Self.seconds(clock.now - killed)
            pinging.cancel()
            let during = (try? await pinging.value) ?? Samples()
            report.storm_seconds_to_all_back = counted == self.edges ? recovered : nil
            report.storm_edges_not_back = self.edges - counted
            report.storm_rate_per_second = rate
            if during.count > 0 {  // JSON has no NaN
                report.storm_ping_p50_us = during.percentile(50)
                report.storm_ping_p99_us = during.percentile(99)
            }
            var reasons: [String: Int] = [:]
            for relay in relays where relay.connection == nil { reasons[relay.notReady ?? "connected late", default: 0] += 1 }
            report.storm_not_back_reasons = reasons
            for (reason, count) in reasons.sorted(by: { $0.value > $1.value }) { self.say("  not back: \(count): \(reason)") }
            self.say(
                String(
                    format: "reconnect storm: %d of %d back within %.0f s; ping p50 %.0f µs p99 %.0f µs on edges already back (%.2f× the idle p99)",
                    counted, self.edges, recovered, during.percentile(50), during.percentile(99),
                    during.percentile(99) / max(1, before.percentile(99))))
        }

        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
        hub.signal(SIGKILL)
        hub.waitUntilExit()
        for task in tasks { task.cancel() }
    }

    private func say(_ line: String) { ProgressLine.say(line, json: self.json) }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Starts `tether hub` and returns once it accepts TCP connections on `port`.
    private static func startHub(config: String, log: String, port: Int, group: any EventLoopGroup) async throws -> SpawnedProcess {
        let hub = try SpawnedProcess(try BenchProcess.executable().path, ["hub", "--config", config], log: log)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        for _ in 0..<400 {
            if let channel = try? await ClientBootstrap(group: group).connect(to: address).get() {
                try? await channel.close()
                return hub
            }
            guard hub.isRunning else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        hub.signal(SIGTERM)
        throw RelayDaemonsError("the hub did not listen within 10 s (log: \(log))")
    }

    /// Returns once every edge has received a PING frame since now (its keepalive's ACK, or the
    /// hub's own PING) — past those of the preface's round-trip sample.
    private static func untilEveryEdgeHadAKeepalive(_ relays: [EdgeRelay]) async throws {
        func pings(_ relay: EdgeRelay) async -> Int? {
            guard let connection = relay.connection else { return nil }
            return try? await connection.countersNow().get().pingsReceived
        }
        var before: [Int: Int] = [:]
        for index in relays.indices { before[index] = await pings(relays[index]) ?? 0 }
        var waiting = Array(relays.indices)
        let deadline = ContinuousClock.now + .seconds(60)
        while !waiting.isEmpty {
            try await Task.sleep(for: .seconds(1))
            var still: [Int] = []
            for index in waiting where (await pings(relays[index]) ?? 0) <= before[index]! { still.append(index) }
            waiting = still
            guard ContinuousClock.now < deadline else { throw RelayDaemonsError("\(waiting.count) edges had no keepalive within 60 s") }
        }
    }

    /// Ping round trips (microseconds) for `duration` from 8 pingers, each on a random connected
    /// edge (of `among`, when given) every 10 ms: a command's round trip through the hub's loops.
    private static func pings(_ relays: [EdgeRelay], for duration: Duration, among: NIOLockedValueBox<Set<Int>>? = nil) async throws -> Samples {
        let deadline = ContinuousClock.now + duration
        return try await withThrowingTaskGroup(of: Samples.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var samples = Samples()
                    while ContinuousClock.now < deadline && !Task.isCancelled {
                        let index = among.map { $0.withLockedValue { $0.randomElement() } } ?? relays.indices.randomElement()
                        if let index, let connection = relays[index].connection, let rtt = try? await connection.ping() {
                            samples.add(Double(rtt.nanoseconds) / 1_000)
                        }
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                    return samples
                }
            }
            return try await group.reduce(into: Samples()) { $0.merge($1) }
        }
    }
}

/// The fleet's files: one certificate per edge (tenant `fleet`, agents `node-<i>`), the hub's
/// configuration, and an edge policy that allows nothing to leave (idle edges send nothing).
private struct FleetFiles {
    let certificates: ThrowAwayCertificates
    let policy: String
    var hubLog: String { self.certificates.directory + "/fleet-hub.log" }

    init(certificates: ThrowAwayCertificates, edges: Int) throws {
        self.certificates = certificates
        let authority = try CertificateAuthority(
            certificateFile: certificates.directory + "/ca.pem", keyFile: certificates.directory + "/ca.key")
        try FileManager.default.createDirectory(atPath: certificates.directory + "/edges", withIntermediateDirectories: true)
        for index in 0..<edges {
            try authority.issue(.edge(TetherIdentity(tenant: "fleet", agentID: "node-\(index)")!))
                .write(certificateTo: Self.certificate(index, in: certificates.directory), keyTo: Self.key(index, in: certificates.directory))
        }
        self.policy = certificates.directory + "/fleet-policy.yaml"
        try "version: 1\n".write(toFile: self.policy, atomically: true, encoding: .utf8)
    }

    private static func certificate(_ index: Int, in directory: String) -> String { directory + "/edges/\(index).pem" }
    private static func key(_ index: Int, in directory: String) -> String { directory + "/edges/\(index).key" }

    func writeHubConfiguration(port: Int, handshakesPerSecond: Int?) throws -> String {
        let path = self.certificates.directory + "/fleet-hub.yaml"
        try """
        role: hub
        listen: 127.0.0.1:\(port)
        tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
        log: {level: warning}
        \(handshakesPerSecond.map { "limits: {handshakesPerSecond: \($0)}" } ?? "")
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Edge `index`, with the shipped dial settings, leaving from 127.0.0.2–127.0.0.9 in turn so
    /// that 10,000 connections to one port do not run out of source ports.
    func edge(_ index: Int, hubPort: Int, group: any EventLoopGroup) throws -> EdgeRelay {
        let directory = self.certificates.directory
        var configuration = EdgeConfiguration(
            hubs: [.tcp(host: "127.0.0.1", port: hubPort)],
            tls: RelayTLSFiles(
                certificate: Self.certificate(index, in: directory), key: Self.key(index, in: directory),
                trustedCAs: [directory + "/ca.pem"]),
            policy: self.policy)
        configuration.dial.source = "127.0.0.\(2 + index % 8)"
        configuration.proxy = .none
        return try EdgeRelay(
            configuration: configuration, group: group, logger: Logger(label: "fleet", factory: { _ in SwiftLogNoOpLogHandler() }))
    }
}

/// Figures of a process read from `/proc`.
struct ProcessProbe {
    let pid: Int32

    /// `VmRSS`.
    var residentBytes: Int {
        let status = (try? String(contentsOfFile: "/proc/\(self.pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1_024
    }

    /// User and system CPU time so far (`utime` + `stime`).
    var cpuSeconds: Double {
        let stat = (try? String(contentsOfFile: "/proc/\(self.pid)/stat", encoding: .utf8)) ?? ""
        // Fields after the command name (which may hold spaces), from field 3 on.
        guard let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The kernel's memory for TCP sockets, all processes (`/proc/net/sockstat`'s `TCP: … mem`, pages).
    static func kernelTCPMemoryBytes() -> Int {
        let sockstat = (try? String(contentsOfFile: "/proc/net/sockstat", encoding: .utf8)) ?? ""
        guard let line = sockstat.split(separator: "\n").first(where: { $0.hasPrefix("TCP:") }) else { return 0 }
        let words = line.split(separator: " ")
        guard let index = words.firstIndex(of: "mem"), index + 1 < words.count, let pages = Int(words[index + 1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// A line of a long bench's progress: on stdout as it goes (a log file follows the run), or on
/// stderr when stdout carries the JSON report.
enum ProgressLine {
    static func say(_ line: String, json: Bool) {
        if json {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        } else {
            print(line)
            fflush(nil)
        }
    }
}
