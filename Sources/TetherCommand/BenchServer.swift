import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherWire

/// `tether bench-server`: the far end of `tether bench`, in its own process. Prints
/// `PORTS <tether> <raw>` on stdout and serves until its stdin closes.
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-server", abstract: "The far end of `tether bench` (started by it).", shouldDisplay: false)

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        var settings = BenchSettings.tunnel
        settings.initialStreams = PerClass(16_384)
        let tether = try await LoopbackTransport.listen(
            group: group, configuration: .init(role: .acceptor, settings: settings)
        ) { Workloads.serve($0) }
        let raw = try await RawTCP.listen(group: group)
        print("PORTS \(tether.localAddress!.port!) \(raw.localAddress!.port!)")
        fflush(nil)
        // Serve until the parent goes away.
        while let _ = readLine() {}
        try await tether.close()
        try await raw.close()
        try await group.shutdownGracefully()
    }
}

/// Settings both ends of the benchmark use.
enum BenchSettings {
    static var tunnel: Settings {
        Settings()
    }
}
