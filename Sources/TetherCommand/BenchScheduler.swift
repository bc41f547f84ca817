import ArgumentParser
import NIOCore
import TetherSession
import TetherWire

/// `tether bench-scheduler`: the cost of one scheduling decision with few and many backlogged
/// streams (spec §8.2: it must not grow with the number of streams), without I/O.
struct BenchScheduler: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-scheduler", abstract: "Cost per scheduling decision with 10 and 10,000 streams.",
        shouldDisplay: false)

    @Option(help: "Decisions to time per stream count.")
    var decisions: Int = 200_000

    func run() throws {
        for count in [10, 10_000] {
            let now = NIODeadline.uptimeNanoseconds(1)
            var settings = Settings()
            settings.initialStreams = PerClass(UInt32(count + 16))
            settings.initialConnectionCredit = Settings.maxCredit
            var configuration = SessionConfiguration(role: .dialer, settings: settings)
            configuration.windowTuning = .disabled
            var session = Session(configuration: configuration, now: now)
            var peer = settings
            peer.initialStreamCredit = Settings.maxCredit
            _ = session.receive(.settings(.values(peer.entries)), now: now)
            var ids: [StreamID] = []
            for _ in 0..<count { ids.append(try session.openStream(.bulk, service: "sink", now: now).get()) }
            var bytes = ByteBuffer()
            while session.produce(into: &bytes, now: now) != nil { bytes.clear() }
            let message = ByteBuffer(repeating: 1, count: 64)
            let perStream = self.decisions / count + 1
            for id in ids {
                for _ in 0..<perStream { _ = session.write(id, message, endMessage: true, now: now) }
            }
            let start = NIODeadline.now()
            for _ in 0..<self.decisions {
                bytes.clear()
                guard session.produce(into: &bytes, now: now) != nil else { break }
            }
            let elapsed = NIODeadline.now() - start
            print("\(count) streams: \(Double(elapsed.nanoseconds) / Double(self.decisions)) ns per decision")
        }
    }
}
