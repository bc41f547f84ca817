// The session layer's cost per frame, without I/O (spec §7, §8.2): two sessions in memory, one
// writing 16 KiB frames, the other receiving and consuming them; the scheduler's cost per
// decision with 10 and 10,000 streams ready; and heap allocations per MiB through a session pair,
// the figure CI checks against `Thresholds/` (counts are stable where times are not).
import Benchmark
import NIOCore
import TetherSession
import TetherWire

/// A sender and a receiver session wired in memory.
struct Pair {
    var sender: Session
    var receiver: Session
    var toReceiver = FrameDecoder(expectsPreface: true)
    var toSender = FrameDecoder(expectsPreface: true)
    let now = NIODeadline.uptimeNanoseconds(1)

    init(streams: Int) {
        var settings = Settings()
        settings.initialStreams = PerClass(UInt32(streams + 16))
        settings.initialConnectionCredit = 64 << 20
        var configuration = SessionConfiguration(role: .dialer, settings: settings)
        configuration.windowTuning = .disabled
        self.sender = Session(configuration: configuration, now: self.now)
        configuration.role = .acceptor
        self.receiver = Session(configuration: configuration, now: self.now)
        self.toReceiver.append(ByteBuffer(bytes: Preface.magic))
        self.toSender.append(ByteBuffer(bytes: Preface.magic))
        self.exchange()
    }

    /// Moves every produced frame across once; the receiver consumes all data at once.
    mutating func exchange() {
        var bytes = ByteBuffer()
        while let produced = self.sender.produce(into: &bytes, now: self.now) {
            if var payload = produced.payload { bytes.writeBuffer(&payload) }
        }
        self.toReceiver.append(bytes)
        while let frame = try! self.toReceiver.nextFrame() {
            for case .data(let id, let payload, _) in self.receiver.receive(frame, now: self.now) {
                self.receiver.consume(id, octets: payload.readableBytes, now: self.now)
            }
        }
        var back = ByteBuffer()
        while let produced = self.receiver.produce(into: &back, now: self.now) {
            if var payload = produced.payload { back.writeBuffer(&payload) }
        }
        self.toSender.append(back)
        while let frame = try! self.toSender.nextFrame() {
            _ = self.sender.receive(frame, now: self.now)
        }
    }
}

/// Allocation counts are deterministic: a run may exceed the stored p90 by at most this.
var allocationTolerance: [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: .init(relative: [.p90: 2.0], absolute: [.p90: 2])]
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(3)
    )

    // One scaled iteration = one 16,375-octet DATA frame end to end (write, produce, decode,
    // receive, consume, credit back).
    Benchmark("pair: 16 KiB frame end to end") { benchmark in
        var pair = Pair(streams: 1)
        let id = try pair.sender.openStream(.bulk, service: "sink", now: pair.now).get()
        let chunk = ByteBuffer(repeating: 0x5A, count: 16_375 * 4)
        for _ in 0..<(benchmark.scaledIterations.count / 4) {
            _ = pair.sender.write(id, chunk, now: pair.now)
            pair.exchange()
        }
    }

    // (No spaces in the name: package-benchmark 1.38.1 writes threshold files with them replaced
    // but looks for them as they are.)
    // One iteration = 1 MiB (64 frames of 16,375 octets, written in 64 KiB writes) end to end,
    // after a MiB of warm-up: the mallocs of the session layer and of this in-memory harness's
    // buffers, per MiB. `swift package benchmark thresholds check` fails when they grow.
    Benchmark(
        "allocations-per-MiB-session-pair",
        configuration: .init(
            metrics: [.mallocCountTotal], scalingFactor: .one, maxDuration: .seconds(2), maxIterations: 100,
            thresholds: allocationTolerance)
    ) { benchmark in
        var pair = Pair(streams: 1)
        let id = try pair.sender.openStream(.bulk, service: "sink", now: pair.now).get()
        let chunk = ByteBuffer(repeating: 0x5A, count: 16_375 * 4)
        for round in 0..<32 {
            if round == 16 { benchmark.startMeasurement() }
            _ = pair.sender.write(id, chunk, now: pair.now)
            pair.exchange()
        }
        benchmark.stopMeasurement()
    }

    // One scaled iteration = one scheduling decision among `count` backlogged streams.
    for count in [10, 10_000] {
        Benchmark("scheduler: one frame among \(count) backlogged streams") { benchmark in
            var pair = Pair(streams: count)
            var ids: [StreamID] = []
            for _ in 0..<count {
                ids.append(try pair.sender.openStream(.bulk, service: "sink", now: pair.now).get())
            }
            var bytes = ByteBuffer()
            while pair.sender.produce(into: &bytes, now: pair.now) != nil { bytes.clear() }  // the OPENs
            let small = ByteBuffer(repeating: 1, count: 64)
            for id in ids {
                for _ in 0..<(1 + benchmark.scaledIterations.count / count) {
                    _ = pair.sender.write(id, small, endMessage: true, now: pair.now)
                }
            }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                bytes.clear()
                blackHole(pair.sender.produce(into: &bytes, now: pair.now))
            }
            benchmark.stopMeasurement()
        }
    }
}
