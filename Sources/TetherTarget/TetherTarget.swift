import ArgumentParser
import Foundation
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import Tether
import TetherRelay
import TetherTLS
import TetherWire

/// `TetherTarget`: a hub built from the library alone, for the hostile-peer tests
/// (SECURITY.md). It accepts edges over mutual TLS and serves `echo` (bytes back), `firehose`
/// (bytes until the stream ends), `hold` (never reads) and `inflate` (reads to the end through the
/// async face, which inflates within the bomb limits, counting `tether_target_inflated_octets_total`); `down` is refused with CONNECT_ERROR, as
/// a relay refuses a stream whose backend is down; every other service is refused with
/// UNKNOWN_SERVICE. On standard input
/// it answers `metrics` (Prometheus text, then `END`) and `memory` (`VmHWM <kB> VmRSS <kB>`);
/// it exits when standard input closes.
@main
struct TetherTarget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "TetherTarget", abstract: "A library-level hub for the hostile-peer tests.")

    @Option var certificate: String
    @Option var key: String
    @Option var ca: String
    @Option(help: "TLS handshake timeout, seconds.") var handshakeTimeout: Double = 10
    @Option(help: "Keepalive interval, milliseconds (0: off).") var keepaliveInterval: UInt32 = 15_000
    @Option(help: "Keepalive timeout, seconds.") var keepaliveTimeout: Double = 20
    @Option(help: "Seconds a connection may take to send its preface (spec §12).") var prefaceTimeout: Double = 10

    func run() async throws {
        try FileDescriptorLimit.raiseToHardLimit()  // thousands of sockets: Debian's soft limit is 1,024
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        var tlsConfiguration = TLSConfiguration(
            role: .server, certificateChainFile: self.certificate, privateKeyFile: self.key, trustedCAFiles: [self.ca])
        tlsConfiguration.handshakeTimeout = .nanoseconds(Int64(self.handshakeTimeout * 1e9))
        var settings = Settings()
        settings.keepaliveIntervalMilliseconds = self.keepaliveInterval
        var configuration = TetherConnectionHandler.Configuration(role: .acceptor, settings: settings)
        configuration.session.keepaliveTimeout = .nanoseconds(Int64(self.keepaliveTimeout * 1e9))
        configuration.session.abuseLimits.prefaceTimeout = .nanoseconds(Int64(self.prefaceTimeout * 1e9))
        configuration.metricsFactory = factory

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let listener = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: try TLSContextStore(configuration: tlsConfiguration),
            configuration: configuration,
            inboundStreamHandler: { [inflated = Metrics.Counter(label: "tether_target_inflated_octets_total", factory: factory)] in
                Self.serve($0, inflated: inflated)
            })
        Self.say("listening \(listener.localAddress!.port!)")
        while let line = readLine() {
            switch line {
            case "metrics": Self.say(registry.emitToString() + "END")
            case "memory": Self.say(Self.memory())
            default: Self.say("unknown command")
            }
        }
        try await listener.close()
        try await group.shutdownGracefully()
    }

    /// One answer on standard output, unbuffered.
    static func say(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// Serves a stream on the event loop, as a relay would.
    static func serve(_ handle: TetherStreamHandle, inflated: Metrics.Counter) {
        switch handle.service {
        case "echo":
            handle.onReadable = {
                while let read = handle.read() {
                    handle.write(read.bytes, endMessage: read.endsMessage).whenSuccess { handle.consumed(read.wireOctets) }
                }
                if handle.isReadEnded && handle.failure == nil { _ = handle.finish() }
            }
        case "hold":
            break  // accepted, never read: what arrives stays charged to the window
        case "firehose":
            let chunk = ByteBuffer(repeating: 0x5A, count: 16_384)
            @Sendable func pump() {
                guard handle.failure == nil else { return }
                handle.write(chunk).whenSuccess { handle.eventLoop.execute { pump() } }
            }
            handle.onReadable = {
                while let read = handle.read() { handle.consumed(read.wireOctets) }
            }
            pump()
        case "inflate":
            let stream = TetherStream(handle)
            Task {  // a bomb ends it with COMPRESSION_ERROR
                for try await chunk in stream.chunks { inflated.increment(by: Int64(chunk.readableBytes)) }
            }
        case "down":
            handle.refuse(.connectError)
        default:
            handle.refuse(.unknownService)
        }
    }

    /// The process's peak and current resident memory, from /proc.
    static func memory() -> String {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func value(_ key: String) -> String {
            status.split(separator: "\n").first { $0.hasPrefix(key + ":") }?
                .split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.map(String.init) ?? "0"
        }
        return "VmHWM \(value("VmHWM")) VmRSS \(value("VmRSS"))"
    }
}
