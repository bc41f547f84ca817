import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherRelay
import TetherSession
import TetherTLS
import TetherWire

/// `tether bench-server`: the far end of `tether bench`, in its own process. Prints
/// `PORTS <tether> <raw TCP> <raw TLS or 0> <tether with fixed windows>` on stdout and serves until its stdin closes.
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-server", abstract: "The far end of `tether bench` (started by it).", shouldDisplay: false)

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    @Option(help: "Directory with hub.pem, hub.key and ca.pem: serve over mutual TLS.")
    var certificates: String?

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let tls = try self.certificates.map { try TLSContextStore(configuration: ThrowAwayCertificates(directory: $0).hub) }
        let tether = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: tls,
            configuration: BenchSettings.configuration(.acceptor),
            inboundStreamHandler: { Workloads.serve($0) }, queueLimits: BenchSettings.queueLimits)
        let raw = try await RawTCP.listen(group: group, tls: nil)
        var rawTLS: (any Channel)? = nil
        if let tls { rawTLS = try await RawTCP.listen(group: group, tls: tls) }
        // The same service with windows pinned to their initial size, for the WAN rows: tuning runs
        // but has no budget to grow them (spec §7.4 step 4), as on a hub whose budgets are spent.
        var fixedConfiguration = BenchSettings.configuration(.acceptor)
        fixedConfiguration.session.windowTuning.connectionBudget = 0
        let fixed = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: tls, configuration: fixedConfiguration,
            inboundStreamHandler: { Workloads.serve($0) }, queueLimits: BenchSettings.queueLimits)
        print(
            "PORTS \(tether.localAddress!.port!) \(raw.localAddress!.port!) \(rawTLS?.localAddress!.port! ?? 0) "
                + "\(fixed.localAddress!.port!)")
        fflush(nil)
        // Serve until the parent goes away.
        while let _ = readLine() {}
        try await tether.close()
        try await raw.close()
        try await rawTLS?.close()
        try await fixed.close()
        try await group.shutdownGracefully()
    }
}

/// Settings both ends of the benchmark use: the defaults, with room for the idle-stream row.
enum BenchSettings {
    /// The default queue limits; `TETHER_BENCH_NOTSENT` and `TETHER_BENCH_WATERMARK` (high, in
    /// octets) override them for experiments.
    static var queueLimits: TetherTransport.QueueLimits {
        var limits = TetherTransport.QueueLimits()
        let environment = ProcessInfo.processInfo.environment
        if let notSent = environment["TETHER_BENCH_NOTSENT"].flatMap(Int.init) { limits.notSentLowWaterMark = .fixed(notSent) }
        if let reads = environment["TETHER_BENCH_READS"].flatMap(UInt.init) { limits.readsPerWakeup = reads }
        if let high = environment["TETHER_BENCH_WATERMARK"].flatMap(Int.init) {
            limits.writeBufferWaterMark = .init(low: high / 2, high: high)
        }
        return limits
    }

    static var configuration: (Role) -> TetherConnectionHandler.Configuration {
        { role in
            var configuration = TetherConnectionHandler.Configuration(role: role, settings: Self.tunnel)
            if ProcessInfo.processInfo.environment["TETHER_BENCH_NO_READ_FIRST"] != nil {
                configuration.unreadInput = { _ in false }
            }
            if ProcessInfo.processInfo.environment["TETHER_BENCH_NO_TUNING"] != nil {
                configuration.session.windowTuning = .disabled
            }
            return configuration
        }
    }

    static var tunnel: Settings {
        var settings = Settings()
        settings.initialStreams = PerClass(16_384)
        let environment = ProcessInfo.processInfo.environment
        if let credit = environment["TETHER_BENCH_STREAM_CREDIT"].flatMap(UInt32.init) {
            settings.initialStreamCredit = credit
        }
        if let credit = environment["TETHER_BENCH_CONNECTION_CREDIT"].flatMap(UInt32.init) {
            settings.initialConnectionCredit = credit
        }
        return settings
    }
}
