import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherRelay
import TetherTLS
import TetherWire

/// `tether bench`: the benchmarks, each a subcommand; without one, the throughput and latency rows.
public struct BenchCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the tunnel: throughput and latency (the default), the policy filter, log compression, a fleet.",
        subcommands: [BenchThroughput.self, BenchPolicy.self, BenchCompression.self, BenchFleet.self, BenchBurst.self, BenchServer.self],
        defaultSubcommand: BenchThroughput.self)

    public init() {}
}

/// `tether bench [throughput]`: throughput and latency between two processes on loopback, with a
/// plain TCP connection and a raw TLS connection measured in the same run as the baselines.
struct BenchThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Measure tunnel throughput and command latency against plain TCP and TLS, in one run.")

    @Option(help: "Stream counts for the throughput rows, comma-separated.")
    var streams: String = "1,8,64"

    @Option(help: "Octets per throughput row (suffixes K, M, G for KiB, MiB, GiB).")
    var bytes: String = "1G"

    @Option(help: "Seconds of each latency phase (bulk alone, then bulk with commands).")
    var seconds: Double = 5

    enum TransportOption: String, ExpressibleByArgument, CaseIterable {
        case tls
        case tcp
    }

    @Option(help: "Transport under the tunnel: tls (mutual TLS 1.3, throw-away certificates) or tcp.")
    var transport: TransportOption = .tls

    @Option(
        help: """
            Which rows to run, comma-separated: idle, opens, raw, tunnel, relay, relays, peers, latency, \
            memory (with --link-rtt: tunnel, latency).
            """)
    var only: String = "idle,opens,raw,tunnel,relay,relays,peers,latency,memory"

    @Option(
        help: """
            Another forwarder to measure beside the relays, as NAME=HOST:PORT: a local forward (ssh -L, \
            stunnel's client) leading to the sink at --sink-port. Repeatable; Benchmarks/peers.sh starts them.
            """)
    var peer: [String] = []

    @Option(help: "Port of the far end's plain TCP sink on 127.0.0.1, for --peer forwards to lead to (0: any).")
    var sinkPort: Int = 0

    @Option(help: "Idle streams to hold open for the memory row (0 to skip).")
    var idleStreams: Int = 10_000

    @Option(help: "Emulate a WAN between the ends: round-trip time such as 50ms (with --link-rate).")
    var linkRTT: String?

    @Option(help: "Emulate a WAN between the ends: link rate such as 500mbit (with --link-rtt).")
    var linkRate: String?

    @Option(help: "With --link-rtt: the bottleneck's queue for the link-bound latency row (its socket adds up to 32 KiB).")
    var linkQueue: String = "256K"

    @Flag(
        help: """
            Run the bench's threads and the far end at real-time priority (SCHED_FIFO; needs root or \
            CAP_SYS_NICE), so that on a machine with fewer CPUs than the bench has roles (client, \
            emulated link, server) the time a ready thread waits for a CPU stays out of the latency rows.
            """)
    var realtime = false

    @Flag(help: "Print one JSON object per line per scenario instead of a table.")
    var json = false

    @OptionGroup(visibility: .hidden) var experiment: BenchSettings

    @Flag(help: ArgumentHelp("With --link-rtt: print the auto-tuned row's rate every 250 ms.", visibility: .hidden))
    var trace = false

    struct Row: Encodable {
        var scenario: String
        var streams: Int
        var bytes: Int
        var seconds: Double
        var mib_per_s: Double
        var baseline: String?
        var ratio_to_baseline: Double?
        var p50_us: Double?
        var p99_us: Double?
        var p999_us: Double?
        /// Latency rows: how many command round trips the percentiles are of.
        var commands: Int?
        /// Latency rows: the share of the machine's CPU time the hypervisor took while the commands
        /// ran (see ``StealMeter``); the link-bound row also gives it for its idle phase.
        var steal_percent: Double?
        var idle_steal_percent: Double?
        /// Latency rows: whether they ran at real-time priority (`--realtime`).
        var realtime: Bool?
        var bulk_alone_mib_per_s: Double?
        /// Stream-open row: streams opened, echoed and closed per second.
        var opens_per_s: Double?
        var client_bytes_per_stream: Double?
        var server_bytes_per_stream: Double?
        /// Throughput rows, both processes together: CPU nanoseconds per octet moved (steal-time
        /// proof cost), read and write system calls and context switches per MiB, TLS records per
        /// MiB and their mean plaintext, and octets copied in user space per octet moved (see
        /// ``ProcessCost`` and ``charge(_:octets:)``).
        var cpu_ns_per_byte: Double?
        var syscalls_per_mib: Double?
        var context_switches_per_mib: Double?
        var tls_records_per_mib: Double?
        var tls_record_mean_octets: Double?
        var copies_per_octet: Double?
        /// Latency rows: the round trip's distribution, `[percent, µs]` pairs (``Samples/quantiles``).
        var quantiles_us: [[Double]]?
        /// WAN rows: seconds until the sender's rate first reached 90 % of the plain TCP flow's.
        var seconds_to_90_percent_of_tcp: Double?
        var link: String?
        /// Link-bound latency row: the command round trip's p50 and p99 with the link idle, the p99 the
        /// aim allows (idle p99 + the bottleneck's queue + 2 ms), and the link's rate.
        var idle_p50_us: Double?
        var idle_p99_us: Double?
        var p99_budget_us: Double?
        var link_mib_per_s: Double?
    }

    func run() async throws {
        guard let octets = Self.parseSize(self.bytes), octets > 0 else {
            throw ValidationError("--bytes: expected a size such as 512M or 1G, got \(self.bytes)")
        }
        let counts = try self.streams.split(separator: ",").map { part -> Int in
            guard let count = Int(part.trimmingCharacters(in: .whitespaces)), count > 0 else {
                throw ValidationError("--streams: expected positive counts such as 1,8,64, got \(self.streams)")
            }
            return count
        }

        if self.realtime {
            // Threads and processes started from here on inherit it: event loops, the far end.
            var parameters = sched_param()
            parameters.sched_priority = 10
            guard sched_setscheduler(0, SCHED_FIFO, &parameters) == 0 else {
                throw ValidationError("--realtime: SCHED_FIFO was refused (\(String(cString: strerror(errno)))); run as root")
            }
        }
        let peers = try self.peers()
        let certificates = self.transport == .tls ? try ThrowAwayCertificates() : nil
        defer { certificates?.remove() }
        let server = try BenchProcess.start(
            certificates: certificates?.directory, sinkPort: self.sinkPort, experiment: self.experiment)
        defer { server.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let tls = try certificates.map { try TLSContext(configuration: $0.edge) }
        let tetherAddress = try SocketAddress(ipAddress: "127.0.0.1", port: server.tetherPort)
        let chunk = Workloads.randomBytes(65_536)
        let configuration = self.experiment.configuration(.dialer)

        let rows = Set(self.only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        if let link = try self.link() {
            try await self.wan(link: link, rows: rows, server: server, tls: tls, chunk: chunk, group: group)
            try await group.shutdownGracefully()
            return
        }
        // Memory first, while both processes are fresh (freed buffers would hide growth later).
        if rows.contains("idle") && self.idleStreams > 0 {
            let idle = try await TetherTransport.dial(group: group, to: tetherAddress, tls: tls, configuration: configuration, queueLimits: self.experiment.queueLimits)
            self.emit(try await Self.idleMemory(idle, streams: self.idleStreams))
            await idle.close()
        }

        // Baselines, in this run: one plain TCP connection, and one through our TLS handler.
        let connection = try await TetherTransport.dial(group: group, to: tetherAddress, tls: tls, configuration: configuration, queueLimits: self.experiment.queueLimits)
        let cost = CostMeter(connection: connection)
        if rows.contains("opens") {
            self.emit(try await Self.opens(connection, concurrency: 16, seconds: self.seconds))
            self.emit(try await Self.opensOnTheLoop(connection, concurrency: 16, seconds: self.seconds))
        }
        var baseline: Row? = nil
        if rows.contains("raw") {
            baseline = try await self.raw("raw-tcp", port: server.rawPort, octets: octets, chunk: chunk, tls: nil, cost: cost)
            if let tls {
                baseline = try await self.raw(
                    "raw-tls", port: server.rawTLSPort, octets: octets, chunk: chunk, tls: tls, cost: cost)
            }
        }

        let scenario = "tunnel-\(self.transport.rawValue)"
        var tunnelRows: [Int: Row] = [:]
        for count in counts where rows.contains("tunnel") {
            let before = try await cost.total()
            let seconds = try await Self.throughput(connection, streams: count, octets: octets, chunk: chunk)
            var row = Row(
                scenario: scenario, streams: count, bytes: octets, seconds: seconds, mib_per_s: Self.mib(octets, seconds),
                baseline: baseline?.scenario, ratio_to_baseline: baseline.map { $0.seconds / seconds })
            row.charge(try await cost.total() - before, octets: octets)
            tunnelRows[count] = row
            self.emit(row)
        }

        // The relay path: local TCP → splice → the same tunnel → splice → TCP sink, one connection
        // per stream, against the tunnel row with as many streams.
        if rows.contains("relay") {
            let entrance = try await RelayPath.entrance(group: group, connection: connection)
            let applications = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            for count in counts {
                let before = try await cost.total()
                let seconds = try await RelayPath.push(
                    group: applications, to: entrance.localAddress!, connections: count, octets: octets, chunk: chunk)
                let tunnel = tunnelRows[count]
                var row = Row(
                    scenario: "relay-\(self.transport.rawValue)", streams: count, bytes: octets, seconds: seconds,
                    mib_per_s: Self.mib(octets, seconds), baseline: tunnel?.scenario,
                    ratio_to_baseline: tunnel.map { $0.seconds / seconds })
                row.charge(try await cost.total() - before, octets: octets)
                self.emit(row)
            }
            try await entrance.close()
            try await applications.shutdownGracefully()
        }

        // The relay path as deployed: `tether edge` and `tether hub` as their own processes, local
        // TCP → edge → hub → the far end's TCP sink, against raw TLS (CPU and system-call figures
        // cover this process and the far end, not the relays: they are left out of this row). Then,
        // at each stream count, the other forwarders (`--peer`) to the same sink, against it.
        var daemons: RelayDaemons? = nil
        if rows.contains("relays"), let certificates {
            daemons = try await RelayDaemons.start(directory: certificates.directory, sinkPort: server.rawPort, group: group)
        }
        defer { daemons?.stop() }  // on an error too: no relay outlives the bench
        if daemons != nil || (rows.contains("peers") && !peers.isEmpty) {
            let applications = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            for count in counts {
                var relays: Row? = nil
                if let daemons {
                    let seconds = try await RelayPath.push(
                        group: applications, to: daemons.entrance, connections: count, octets: octets, chunk: chunk)
                    let row = Row(
                        scenario: "relays-processes", streams: count, bytes: octets, seconds: seconds,
                        mib_per_s: Self.mib(octets, seconds), baseline: baseline?.scenario,
                        ratio_to_baseline: baseline.map { $0.seconds / seconds })
                    self.emit(row)
                    relays = row
                }
                for (name, forward) in peers where rows.contains("peers") {
                    let seconds = try await RelayPath.push(
                        group: applications, to: forward, connections: count, octets: octets, chunk: chunk)
                    self.emit(
                        Row(
                            scenario: "peer-\(name)", streams: count, bytes: octets, seconds: seconds,
                            mib_per_s: Self.mib(octets, seconds), baseline: relays?.scenario,
                            ratio_to_baseline: relays.map { $0.seconds / seconds }))
                }
            }
            try await applications.shutdownGracefully()
        }

        if rows.contains("memory"), let certificates {
            // User space alone: TLS, then the tunnel over TLS, between embedded channels on this thread.
            let octets = min(octets, 1 << 30)
            var baseline: Row?
            for tunnel in [false, true] {
                let pair = try InMemoryTunnel(certificates: certificates, tunnel: tunnel)
                try pair.move(4 * InMemoryTunnel.chunk.readableBytes)  // warm
                let before = ProcessCost.current()
                let started = NIODeadline.now()
                try pair.move(octets / InMemoryTunnel.chunk.readableBytes * InMemoryTunnel.chunk.readableBytes)
                let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
                var row = Row(
                    scenario: tunnel ? "memory-tunnel-tls" : "memory-raw-tls", streams: 1, bytes: octets, seconds: seconds,
                    mib_per_s: Self.mib(octets, seconds), baseline: baseline?.scenario,
                    ratio_to_baseline: baseline.map { $0.seconds / seconds })
                row.charge(ProcessCost.current() - before, octets: octets)
                self.emit(row)
                baseline = baseline ?? row
            }
        }

        if rows.contains("latency") {
            // The same commands with nothing else on the connection, then under bulk.
            let idle = try await Self.commands(connection, until: .now() + .nanoseconds(Int64(self.seconds * 1e9)))
            self.emit(
                Row(
                    scenario: "command-rtt-idle-\(self.transport.rawValue)", streams: 0, bytes: 0, seconds: self.seconds,
                    mib_per_s: 0, p50_us: idle.percentile(50), p99_us: idle.percentile(99), p999_us: idle.percentile(99.9),
                    commands: idle.count, quantiles_us: idle.quantiles))
            var latency = try await Self.latency(connection, seconds: self.seconds, chunk: chunk)
            latency.scenario += "-\(self.transport.rawValue)"
            self.emit(latency)
        }
        await connection.close()
        try await group.shutdownGracefully()
    }

    /// The WAN rows: with `tunnel` in `rows`, window auto-tuning (spec §7.4); with `latency`, the
    /// link-bound command round trip under bulk (spec §8.2).
    private func wan(
        link: LinkProfile, rows: Set<String>, server: BenchProcess, tls: TLSContext?, chunk: ByteBuffer,
        group: any EventLoopGroup
    ) async throws {
        let linkGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        if rows.contains("tunnel") {
            try await self.wanWindows(link: link, server: server, tls: tls, chunk: chunk, group: group, linkGroup: linkGroup)
        }
        if rows.contains("latency") {
            try await self.wanLatency(link: link, server: server, tls: tls, chunk: chunk, group: group, linkGroup: linkGroup)
        }
        try await linkGroup.shutdownGracefully()
    }

    /// One plain TCP flow, one tunnel stream with auto-tuned windows and one with windows pinned
    /// at their initial size, each through the same emulated link (spec §7.4).
    private func wanWindows(
        link: LinkProfile, server: BenchProcess, tls: TLSContext?, chunk: ByteBuffer, group: any EventLoopGroup,
        linkGroup: any EventLoopGroup
    ) async throws {
        let rawPort = tls == nil ? server.rawPort : server.rawTLSPort
        let rawLine = try await DelayLine.start(group: linkGroup, port: rawPort, link: link)
        let tunedLine = try await DelayLine.start(group: linkGroup, port: server.tetherPort, link: link)
        let fixedLine = try await DelayLine.start(group: linkGroup, port: server.fixedWindowPort, link: link)
        let octets = Int(link.rate * 8)  // about 8 s at the link's rate

        let rawSeconds = try await RawTCP.push(
            group: group, to: rawLine.localAddress!, octets: octets, chunk: chunk, tls: tls)
        let raw = Row(
            scenario: "wan-raw-\(self.transport.rawValue)", streams: 1, bytes: octets, seconds: rawSeconds,
            mib_per_s: Self.mib(octets, rawSeconds), link: self.linkLabel)
        self.emit(raw)

        let configuration = self.experiment.configuration(.dialer)
        let tuned = try await TetherTransport.dial(group: group, to: tunedLine.localAddress!, tls: tls, configuration: configuration, queueLimits: self.experiment.queueLimits)
        let progress = NIOLockedValueBox([(NIODeadline, Int)]())
        let started = NIODeadline.now()
        let handle = try await tuned.openStream(service: "sink", class: .bulk).handle
        let answer = try await handle.eventLoop.flatSubmit {
            Workloads.push(
                handle, chunk: chunk, octets: octets,
                progress: { written in progress.withLockedValue { $0.append((.now(), written)) } }
            ).flatMap { _ in Workloads.readMessage(handle) }
        }.get()
        let tunedSeconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        if self.trace {
            var last = (started, 0)
            for sample in progress.withLockedValue({ $0 }) where sample.0 - last.0 >= .milliseconds(250) {
                let rate = Double(sample.1 - last.1) / (Double((sample.0 - last.0).nanoseconds) / 1e9) / 1_048_576
                print(String(format: "  t=%.2f s  %.1f MiB/s", Double((sample.0 - started).nanoseconds) / 1e9, rate))
                last = sample
            }
        }
        guard answer != nil else { throw ValidationError("the receiver did not acknowledge") }
        self.emit(
            Row(
                scenario: "wan-tunnel-autotuned", streams: 1, bytes: octets, seconds: tunedSeconds,
                mib_per_s: Self.mib(octets, tunedSeconds), baseline: raw.scenario, ratio_to_baseline: rawSeconds / tunedSeconds,
                seconds_to_90_percent_of_tcp: Self.timeTo(0.9 * Double(octets) / rawSeconds, progress.withLockedValue { $0 }, from: started),
                link: self.linkLabel))
        await tuned.close()

        let fixed = try await TetherTransport.dial(group: group, to: fixedLine.localAddress!, tls: tls, configuration: configuration, queueLimits: self.experiment.queueLimits)
        let (fixedOctets, fixedSeconds) = try await Self.bulk(fixed, seconds: 5, chunk: chunk, streams: 1) { _ in nil }
        self.emit(
            Row(
                scenario: "wan-tunnel-fixed-256KiB", streams: 1, bytes: fixedOctets, seconds: fixedSeconds,
                mib_per_s: Self.mib(fixedOctets, fixedSeconds), baseline: raw.scenario,
                ratio_to_baseline: Self.mib(fixedOctets, fixedSeconds) / raw.mib_per_s, link: self.linkLabel))
        await fixed.close()
        try await rawLine.close()
        try await tunedLine.close()
        try await fixedLine.close()
    }

    /// Link-bound latency: the same link with a small bounded queue (spec §8.2 shallow queues).
    private func wanLatency(
        link: LinkProfile, server: BenchProcess, tls: TLSContext?, chunk: ByteBuffer, group: any EventLoopGroup,
        linkGroup: any EventLoopGroup
    ) async throws {
        let configuration = self.experiment.configuration(.dialer)
        guard let queue = Self.parseSize(self.linkQueue) else { throw ValidationError("--link-queue: a size such as 256K") }
        var bounded = link
        bounded.queueLimit = queue
        bounded.receiveBuffer = 16_384
        let boundLine = try await DelayLine.start(group: linkGroup, port: server.tetherPort, link: bounded)
        let latencyConnection = try await TetherTransport.dial(
            group: group, to: boundLine.localAddress!, tls: tls, configuration: configuration, queueLimits: self.experiment.queueLimits)
        // Commands at a steady pace: one-at-a-time round trips of 50 ms would give too few samples for a p99.
        let interval = TimeAmount.milliseconds(2)
        let idleSteal = StealMeter()
        let idle = try await Self.commands(
            latencyConnection, every: interval, until: .now() + .nanoseconds(Int64(self.seconds * 1e9)))
        var loaded = try await Self.latency(latencyConnection, seconds: self.seconds, chunk: chunk, commandInterval: interval)
        // The bottleneck's queue: the link's, and what its socket can hold (twice SO_RCVBUF).
        let queueMicroseconds = Double(queue + 2 * bounded.receiveBuffer!) / link.rate * 1e6
        loaded.scenario = "wan-command-rtt-under-bulk"
        loaded.link = self.linkLabel + " queue \(self.linkQueue)"
        loaded.idle_p50_us = idle.percentile(50)
        loaded.idle_p99_us = idle.percentile(99)
        loaded.idle_steal_percent = idleSteal.percent
        loaded.p99_budget_us = idle.percentile(99) + queueMicroseconds + 2_000
        loaded.link_mib_per_s = link.rate / 1_048_576
        self.emit(loaded)
        await latencyConnection.close()
        try await boundLine.close()
    }

    /// The first time the sender's rate over the preceding half second reached `rate` octets/s.
    static func timeTo(_ rate: Double, _ samples: [(NIODeadline, Int)], from start: NIODeadline) -> Double? {
        var windowStart = 0
        for (index, sample) in samples.enumerated() {
            while samples[windowStart].0 + .milliseconds(500) < sample.0 { windowStart += 1 }
            let span = Double((sample.0 - samples[windowStart].0).nanoseconds) / 1e9
            guard span >= 0.25 else { continue }
            if Double(sample.1 - samples[windowStart].1) / span >= rate {
                return Double((sample.0 - start).nanoseconds) / 1e9
            }
            _ = index
        }
        return nil
    }

    /// `--peer NAME=HOST:PORT`, each a local forward of another tool.
    private func peers() throws -> [(String, SocketAddress)] {
        try self.peer.map { text in
            let parts = text.split(separator: "=", maxSplits: 1)
            let address = parts.count == 2 ? parts[1].split(separator: ":") : []
            guard parts.count == 2, !parts[0].isEmpty, address.count == 2, let port = Int(address[1]),
                let socketAddress = try? SocketAddress(ipAddress: String(address[0]), port: port)
            else {
                throw ValidationError("--peer: expected NAME=HOST:PORT such as ssh=127.0.0.1:40022, got \(text)")
            }
            return (String(parts[0]), socketAddress)
        }
    }

    /// How the WAN rows name their link: `50ms 500mbit`.
    private var linkLabel: String { "\(self.linkRTT ?? "") \(self.linkRate ?? "")" }

    /// `--link-rtt` and `--link-rate`, when both are given.
    private func link() throws -> LinkProfile? {
        guard self.linkRTT != nil || self.linkRate != nil else { return nil }
        guard let rttText = self.linkRTT, let rateText = self.linkRate,
            let rtt = Self.parseDuration(rttText), let rate = Self.parseRate(rateText)
        else {
            throw ValidationError("--link-rtt and --link-rate go together, such as --link-rtt 50ms --link-rate 500mbit")
        }
        return LinkProfile(rtt: rtt, bitsPerSecond: rate)
    }

    /// `50ms`, `2s`, `800us`.
    static func parseDuration(_ text: String) -> TimeAmount? {
        for (suffix, nanoseconds) in [("ms", 1e6), ("us", 1e3), ("s", 1e9)] where text.hasSuffix(suffix) {
            return Double(text.dropLast(suffix.count)).map { .nanoseconds(Int64($0 * nanoseconds)) }
        }
        return nil
    }

    /// `500mbit`, `1gbit`, `100kbit`, in bits per second.
    static func parseRate(_ text: String) -> Double? {
        let lower = text.lowercased()
        for (suffix, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] where lower.hasSuffix(suffix) {
            return Double(lower.dropLast(suffix.count)).map { $0 * scale }
        }
        return nil
    }

    private func raw(
        _ scenario: String, port: Int, octets: Int, chunk: ByteBuffer, tls: TLSContext?, cost: CostMeter
    ) async throws -> Row {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let before = try await cost.total()
        let seconds = try await RawTCP.push(group: group, to: address, octets: octets, chunk: chunk, tls: tls)
        let spent = try await cost.total() - before
        try await group.shutdownGracefully()
        var row = Row(
            scenario: scenario, streams: 1, bytes: octets, seconds: seconds, mib_per_s: Self.mib(octets, seconds))
        row.charge(spent, octets: octets)
        self.emit(row)
        return row
    }

    /// `streams` BULK streams to the sink share `octets`; the clock stops when every stream's
    /// receiver has answered with the count it read (spec: acknowledged every byte).
    static func throughput(_ connection: TetherConnection, streams: Int, octets: Int, chunk: ByteBuffer) async throws
        -> Double
    {
        let started = NIODeadline.now()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<streams {
                let share = octets / streams + (index < octets % streams ? 1 : 0)
                group.addTask {
                    let handle = try await connection.openStream(service: "sink", class: .bulk).handle
                    let answer = try await handle.eventLoop.flatSubmit {
                        Workloads.push(handle, chunk: chunk, octets: share).flatMap { _ in Workloads.readMessage(handle) }
                    }.get()
                    guard var answer, answer.readInteger(as: UInt64.self) == UInt64(share) else {
                        throw ValidationError("the receiver did not acknowledge \(share) octets")
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double((NIODeadline.now() - started).nanoseconds) / 1e9
    }

    /// 64-octet command round trips, one after another, until `deadline`.
    static func commands(_ connection: TetherConnection, until deadline: NIODeadline) async throws -> Samples {
        let command = try await connection.openStream(service: "echo", class: .command).handle
        let payload = ByteBuffer(repeating: UInt8(ascii: "c"), count: 64)
        return try await command.eventLoop.flatSubmit { Workloads.pingPong(command, payload: payload, until: deadline) }.get()
    }

    /// 64-octet commands, one every `interval`, until `deadline`; the round trip of each.
    static func commands(_ connection: TetherConnection, every interval: TimeAmount, until deadline: NIODeadline)
        async throws -> Samples
    {
        let command = try await connection.openStream(service: "echo", class: .command).handle
        return try await command.eventLoop.flatSubmit {
            Workloads.probe(command, size: 64, every: interval, until: deadline)
        }.get()
    }

    /// 4 bulk streams alone, then the same with 64-octet commands: one after another, or one every
    /// `interval` when given (a link whose round trip is long).
    static func latency(
        _ connection: TetherConnection, seconds: Double, chunk: ByteBuffer, commandInterval interval: TimeAmount? = nil
    ) async throws -> Row {
        let alone = try await Self.bulk(connection, seconds: seconds, chunk: chunk) { _ in nil }
        var samples = Samples()
        let steal = StealMeter()
        let during = try await Self.bulk(connection, seconds: seconds, chunk: chunk) { deadline in
            samples =
                if let interval {
                    try await Self.commands(connection, every: interval, until: deadline)
                } else {
                    try await Self.commands(connection, until: deadline)
                }
            return samples
        }
        return Row(
            scenario: "command-rtt-under-bulk", streams: 4, bytes: during.octets, seconds: during.seconds,
            mib_per_s: Self.mib(during.octets, during.seconds), p50_us: samples.percentile(50),
            p99_us: samples.percentile(99), p999_us: samples.percentile(99.9), commands: samples.count,
            steal_percent: steal.percent, bulk_alone_mib_per_s: Self.mib(alone.octets, alone.seconds),
            quantiles_us: samples.quantiles)
    }

    /// Memory growth of both processes while `streams` open streams sit idle on one connection.
    static func idleMemory(_ connection: TetherConnection, streams: Int) async throws -> Row {
        func serverResident() async throws -> Int {
            let handle = try await connection.openStream(service: "rss", class: .command).handle
            var answer = try await handle.eventLoop.flatSubmit { Workloads.readMessage(handle) }.get()
            return Int(answer?.readInteger(as: UInt64.self) ?? 0)
        }
        let serverBefore = try await serverResident()
        let clientBefore = ProcessMemory.residentBytes()
        var held: [TetherStream] = []
        held.reserveCapacity(streams)
        let started = NIODeadline.now()
        for _ in 0..<streams {
            held.append(try await connection.openStream(service: "idle", class: .metadata))
        }
        // A round trip after the last OPEN: the server has processed every stream.
        let serverAfter = try await serverResident()
        let clientAfter = ProcessMemory.residentBytes()
        let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        for stream in held { await stream.reset(.cancel) }
        return Row(
            scenario: "idle-streams", streams: streams, bytes: 0, seconds: seconds, mib_per_s: 0,
            client_bytes_per_stream: Double(clientAfter - clientBefore) / Double(streams),
            server_bytes_per_stream: Double(serverAfter - serverBefore) / Double(streams))
    }

    /// Stream opens on one connection: `concurrency` workers each open a COMMAND stream to the far
    /// end's echo, send 64 octets as one message, finish, read the 64 back to the stream's end —
    /// again and again for `seconds`.
    static func opens(_ connection: TetherConnection, concurrency: Int, seconds: Double) async throws -> Row {
        let payload = Workloads.randomBytes(64)
        let started = NIODeadline.now()
        let deadline = started + .nanoseconds(Int64(seconds * 1e9))
        let opened = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var opened = 0
                    while NIODeadline.now() < deadline {
                        let stream = try await connection.openStream(service: "echo", class: .command)
                        try await stream.write(payload, endMessage: true)
                        try await stream.finish()
                        var echoed = 0
                        for try await chunk in stream.chunks { echoed += chunk.readableBytes }
                        guard echoed == payload.readableBytes else { throw RelayDaemonsError("echo answered \(echoed) of 64 octets") }
                        opened += 1
                    }
                    return opened
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var row = Row(scenario: "stream-opens", streams: concurrency, bytes: opened * 64, seconds: elapsed, mib_per_s: 0)
        row.opens_per_s = Double(opened) / elapsed
        return row
    }

    /// The same on the connection's event loop (``TetherStreamHandle``, as the relays use it): no
    /// task hops between Swift concurrency's threads and the loop, so what is left is the
    /// protocol's and the transport's cost.
    static func opensOnTheLoop(_ connection: TetherConnection, concurrency: Int, seconds: Double) async throws -> Row {
        let payload = Workloads.randomBytes(64)
        let loop = connection.eventLoop
        let started = NIODeadline.now()
        let deadline = started + .nanoseconds(Int64(seconds * 1e9))
        @Sendable func rounds(_ done: Int) -> EventLoopFuture<Int> {
            guard NIODeadline.now() < deadline else { return loop.makeSucceededFuture(done) }
            return connection.openStreamHandle(service: "echo", class: .command).flatMap { handle in
                handle.write(payload, endMessage: true).flatMap { handle.finish() }.flatMap { Workloads.readMessage(handle) }
            }.flatMapThrowing { echoed in
                guard echoed?.readableBytes == payload.readableBytes else {
                    throw RelayDaemonsError("echo answered \(echoed?.readableBytes ?? 0) of 64 octets")
                }
            }.flatMap { rounds(done + 1) }
        }
        var opened = 0
        for worker in (0..<concurrency).map({ _ in loop.flatSubmit { rounds(0) } }) { opened += try await worker.get() }
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var row = Row(scenario: "stream-opens-on-loop", streams: concurrency, bytes: opened * 64, seconds: elapsed, mib_per_s: 0)
        row.opens_per_s = Double(opened) / elapsed
        return row
    }

    /// Runs 4 bulk streams for `seconds` while `during` runs; returns the octets the bulk streams wrote.
    static func bulk(
        _ connection: TetherConnection, seconds: Double, chunk: ByteBuffer, streams: Int = 4,
        during: (NIODeadline) async throws -> Samples?
    ) async throws -> (octets: Int, seconds: Double) {
        let stop = NIOLockedValueBox(false)
        var pushes: [EventLoopFuture<Int>] = []
        for _ in 0..<streams {
            let handle = try await connection.openStream(service: "sink", class: .bulk).handle
            pushes.append(
                handle.eventLoop.flatSubmit {
                    Workloads.push(handle, chunk: chunk, octets: nil) { stop.withLockedValue { $0 } }
                })
        }
        let started = NIODeadline.now()
        let deadline = started + .nanoseconds(Int64(seconds * 1e9))
        if try await during(deadline) == nil {
            try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
        }
        stop.withLockedValue { $0 = true }
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var octets = 0
        for push in pushes { octets += try await push.get() }
        return (octets, elapsed)
    }

    private func emit(_ row: Row) {
        var row = row
        if row.p50_us != nil && self.realtime { row.realtime = true }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try! encoder.encode(row), as: UTF8.self))
            return
        }
        var line = row.scenario.padding(toLength: 28, withPad: " ", startingAt: 0)
        line += String(format: "streams %3d  %8.1f MiB/s", row.streams, row.mib_per_s)
        if let ratio = row.ratio_to_baseline, let baseline = row.baseline {
            line += String(format: "  %.2f× %@", ratio, baseline)
        }
        if let p50 = row.p50_us, let p99 = row.p99_us, let p999 = row.p999_us {
            line += String(format: "  rtt p50 %.0f µs p99 %.0f µs p99.9 %.0f µs", p50, p99, p999)
            if let count = row.commands { line += " of \(count)" }
        }
        if let cost = row.costSummary { line += "  " + cost }
        if let link = row.link {
            line += "  [\(link)]"
            if row.scenario == "wan-tunnel-autotuned" {
                line += row.seconds_to_90_percent_of_tcp.map { String(format: "  90 %% of TCP after %.2f s", $0) }
                    ?? "  never reached 90 % of TCP"
            }
        }
        if let alone = row.bulk_alone_mib_per_s { line += String(format: "  (bulk alone %.1f MiB/s)", alone) }
        if let opens = row.opens_per_s { line += String(format: "  %.0f opens/s (open, 64-octet echo, close)", opens) }
        if let idleP50 = row.idle_p50_us, let idle = row.idle_p99_us, let budget = row.p99_budget_us,
            let rate = row.link_mib_per_s
        {
            line += String(
                format: "  idle p50 %.0f µs p99 %.0f µs, p99 allowed %.0f µs; bulk %.0f %% of the link",
                idleP50, idle, budget, 100 * row.mib_per_s / rate)
        }
        if let steal = row.steal_percent {
            line += String(format: "  CPU stolen %.0f %%", steal)
            if let idle = row.idle_steal_percent { line += String(format: " (idle phase %.0f %%)", idle) }
        }
        if row.realtime == true { line += "  SCHED_FIFO" }
        if let client = row.client_bytes_per_stream, let server = row.server_bytes_per_stream {
            line = row.scenario.padding(toLength: 28, withPad: " ", startingAt: 0)
            line += String(
                format: "streams %d  RSS growth per idle stream: client %.0f B, server %.0f B (%.1f MiB for all, server side)",
                row.streams, client, server, server * Double(row.streams) / 1_048_576)
        }
        print(line)
    }

    static func mib(_ octets: Int, _ seconds: Double) -> Double { Double(octets) / 1_048_576 / seconds }

    /// `1G`, `512M`, `64K` or a plain count.
    static func parseSize(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last?.uppercased().first, let unit = units[last] {
            return Int(text.dropLast()).map { $0 * unit }
        }
        return Int(text)
    }
}

/// The share of the machine's CPU time the hypervisor gave to other guests (`steal` in
/// /proc/stat) between two readings: on a shared VM, time a ready thread waited for a CPU —
/// latency that no code in this process can remove.
struct StealMeter {
    private var start: (steal: Int, total: Int)

    init() { self.start = Self.read() }

    /// Percent of all CPU time since `init`.
    var percent: Double? {
        let now = Self.read()
        let total = now.total - self.start.total
        return total > 0 ? Double(now.steal - self.start.steal) / Double(total) * 100 : nil
    }

    /// The `cpu` line: user nice system idle iowait irq softirq steal (guest time is within user).
    private static func read() -> (steal: Int, total: Int) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return (0, 0) }
        let fields = line.split(separator: " ").dropFirst().prefix(8).compactMap { Int($0) }
        guard fields.count == 8 else { return (0, 0) }
        return (fields[7], fields.reduce(0, +))
    }
}

/// The `tether bench serve` child process.
struct BenchProcess {
    let process: Process
    let input: Pipe
    let tetherPort: Int
    let rawPort: Int
    let rawTLSPort: Int
    let fixedWindowPort: Int

    static func start(certificates: String?, sinkPort: Int = 0, experiment: BenchSettings) throws -> BenchProcess {
        let process = Process()
        process.executableURL = try Self.executable()
        process.arguments =
            ["bench", "serve", "--sink-port", "\(sinkPort)"] + (certificates.map { ["--certificates", $0] } ?? [])
            + experiment.arguments
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), let first = byte.first, first != 0x0A {
            line.append(first)
        }
        let parts = String(decoding: line, as: UTF8.self).split(separator: " ")
        guard parts.count == 5, parts[0] == "PORTS", let tether = Int(parts[1]), let raw = Int(parts[2]),
            let rawTLS = Int(parts[3]), let fixed = Int(parts[4])
        else {
            process.terminate()
            throw ValidationError("the far end (tether bench serve) did not report its ports")
        }
        return BenchProcess(
            process: process, input: input, tetherPort: tether, rawPort: raw, rawTLSPort: rawTLS, fixedWindowPort: fixed)
    }

    /// This executable, to run again: argv[0] when it is a path (it is also right under
    /// valgrind, where /proc/self/exe is not).
    static func executable() throws -> URL {
        let argumentZero = CommandLine.arguments[0]
        return URL(
            fileURLWithPath: argumentZero.hasPrefix("/")
                ? argumentZero : try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    }

    func stop() {
        try? self.input.fileHandleForWriting.close()
        self.process.waitUntilExit()
    }
}
