import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherRelay
import TetherSession
import TetherTLS
import TetherWire

/// `tether bench serve` (hidden): the far end of `tether bench`, in its own process. Prints
/// `PORTS <tether> <raw TCP> <raw TLS or 0> <tether with fixed windows>` on stdout and serves until
/// its stdin closes.
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "The far end of `tether bench` (started by it).", shouldDisplay: false)

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    @Option(help: "Directory with hub.pem, hub.key and ca.pem: serve over mutual TLS.")
    var certificates: String?

    @Option(help: "Port of the plain TCP sink on 127.0.0.1 (0: any free one).")
    var sinkPort: Int = 0

    @OptionGroup(visibility: .hidden) var experiment: BenchSettings

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let tls = try self.certificates.map { try TLSContextStore(configuration: ThrowAwayCertificates(directory: $0).hub) }
        let raw = try await RawTCP.listen(group: group, tls: nil, port: self.sinkPort)
        // The relay path's sink is an application beside the relay, on its own thread as the
        // pusher is at the other end.
        let applications = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let relaySink = try await RawTCP.listen(group: applications, tls: nil)
        let sink = relaySink.localAddress!
        let tether = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: tls,
            configuration: self.experiment.configuration(.acceptor),
            inboundStreamHandler: { handle in
                // The relay path's far end splices to the raw sink; everything else is a workload.
                if handle.service == RelayPath.service {
                    RelayPath.exit(handle, to: sink, group: group)
                } else {
                    Workloads.serve(handle)
                }
            },
            queueLimits: self.experiment.queueLimits)
        var rawTLS: (any Channel)? = nil
        if let tls { rawTLS = try await RawTCP.listen(group: group, tls: tls) }
        // The same service with windows pinned to their initial size, for the WAN rows: tuning runs
        // but has no budget to grow them (spec §7.4 step 4), as on a hub whose budgets are spent.
        var fixedConfiguration = self.experiment.configuration(.acceptor)
        fixedConfiguration.session.windowTuning.connectionBudget = 0
        let fixed = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: tls, configuration: fixedConfiguration,
            inboundStreamHandler: { Workloads.serve($0) }, queueLimits: self.experiment.queueLimits)
        print(
            "PORTS \(tether.localAddress!.port!) \(raw.localAddress!.port!) \(rawTLS?.localAddress!.port! ?? 0) "
                + "\(fixed.localAddress!.port!)")
        fflush(nil)
        // Serve until the parent goes away.
        while let _ = readLine() {}
        try await tether.close()
        try await raw.close()
        try await relaySink.close()
        try await applications.shutdownGracefully()
        try await rawTLS?.close()
        try await fixed.close()
        try await group.shutdownGracefully()
    }
}

/// Settings both ends of the benchmark use: the defaults, with room for the idle-stream row — and
/// the experiment knobs, hidden options of `tether bench` (README, "Benchmarks") that the far end
/// gets too. Each changes one default, to measure what it is worth.
struct BenchSettings: ParsableArguments {
    @Option(help: "Pin TCP_NOTSENT_LOWAT to this many octets instead of following the path.")
    var notSent: Int?

    @Option(help: "Socket reads per event-loop wakeup.")
    var readsPerWakeup: UInt?

    @Option(help: "NIO's high write-buffer watermark in octets (the low one is half).")
    var watermark: Int?

    @Flag(help: "Write passes follow each other without reading what waits unread first (spec §8.2 rule 5 off).")
    var noReadFirst = false

    @Flag(help: "Windows stay at their initial size (spec §7.4 off).")
    var noTuning = false

    @Option(help: "INITIAL_STREAM_CREDIT both ends announce.")
    var streamCredit: UInt32?

    @Option(help: "INITIAL_CONNECTION_CREDIT both ends announce.")
    var connectionCredit: UInt32?

    init() {}

    /// The same knobs as arguments, for the far end.
    var arguments: [String] {
        var arguments: [String] = []
        if let notSent { arguments += ["--not-sent", "\(notSent)"] }
        if let readsPerWakeup { arguments += ["--reads-per-wakeup", "\(readsPerWakeup)"] }
        if let watermark { arguments += ["--watermark", "\(watermark)"] }
        if self.noReadFirst { arguments.append("--no-read-first") }
        if self.noTuning { arguments.append("--no-tuning") }
        if let streamCredit { arguments += ["--stream-credit", "\(streamCredit)"] }
        if let connectionCredit { arguments += ["--connection-credit", "\(connectionCredit)"] }
        return arguments
    }

    var queueLimits: TetherTransport.QueueLimits {
        var limits = TetherTransport.QueueLimits()
        if let notSent = self.notSent { limits.notSentLowWaterMark = .fixed(notSent) }
        if let reads = self.readsPerWakeup { limits.readsPerWakeup = reads }
        if let high = self.watermark { limits.writeBufferWaterMark = .init(low: high / 2, high: high) }
        if self.noReadFirst { limits.readFirst = false }
        return limits
    }

    func configuration(_ role: Role) -> TetherConnectionHandler.Configuration {
        var settings = Settings()
        settings.initialStreams = PerClass(16_384)
        if let credit = self.streamCredit { settings.initialStreamCredit = credit }
        if let credit = self.connectionCredit { settings.initialConnectionCredit = credit }
        var configuration = TetherConnectionHandler.Configuration(role: role, settings: settings)
        if self.noTuning { configuration.session.windowTuning = .disabled }
        return configuration
    }
}
