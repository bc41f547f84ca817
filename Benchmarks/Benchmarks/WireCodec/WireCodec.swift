// Encode and decode DATA frames (spec §4, §5.1): frames/s, bytes/s and mallocs per frame.
//
// One scaled iteration is one frame, so package-benchmark reports per frame: throughput is frames/s
// (bytes/s = frames/s × payload size) and mallocs are per frame.
import Benchmark
import NIOCore
import TetherWire

/// Allocation counts are deterministic: a run may exceed the stored p90 by at most this.
var allocationTolerance: [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: .init(relative: [.p90: 2.0], absolute: [.p90: 2])]
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        scalingFactor: .kilo,
        maxDuration: .seconds(3)
    )

    for payloadSize in [16_375, 64] {
        let label = payloadSize == 64 ? "64 B" : "16 KiB"
        let frame = Frame.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 0xA5, count: payloadSize)))
        var wire = ByteBuffer()
        for _ in 0..<Benchmark.defaultConfiguration.scalingFactor.rawValue { wire.writeFrame(frame) }

        Benchmark("decode DATA \(label)") { benchmark in
            var decoder = FrameDecoder()
            decoder.append(wire)
            var bytes = 0
            for _ in benchmark.scaledIterations {
                guard case .data(let data)? = try decoder.nextFrame() else { fatalError("expected DATA") }
                bytes &+= data.payload.readableBytes
            }
            blackHole(bytes)
        }

        Benchmark("encode DATA header \(label)") { benchmark in
            var out = ByteBuffer()
            out.reserveCapacity(benchmark.scaledIterations.count * FrameHeader.size)
            for _ in benchmark.scaledIterations {
                out.writeFrameHeader(FrameHeader(length: payloadSize, type: .data, flags: 0, streamID: 1))
            }
            blackHole(out)
        }

        Benchmark("encode DATA with payload copy \(label)") { benchmark in
            var out = ByteBuffer()
            out.reserveCapacity(benchmark.scaledIterations.count * (FrameHeader.size + payloadSize))
            for _ in benchmark.scaledIterations { out.writeFrame(frame) }
            blackHole(out)
        }
    }

    // One iteration = 1 MiB of 16 KiB DATA frames (64 × 16,375 octets) encoded with their payload
    // copied, the way a frame goes into a TLS record, then decoded: mallocs per MiB, checked by CI
    // against `Thresholds/`.
    let payload = ByteBuffer(repeating: 0xA5, count: 16_375)
    Benchmark(
        "allocations-per-MiB-frame-codec",
        configuration: .init(
            metrics: [.mallocCountTotal], scalingFactor: .one, maxDuration: .seconds(2), maxIterations: 100,
            thresholds: allocationTolerance)
    ) { benchmark in
        var wire = ByteBuffer()
        wire.reserveCapacity(64 * (FrameHeader.size + 16_375))
        benchmark.startMeasurement()
        for index in 0..<64 {
            wire.writeFrame(.data(DataFrame(streamID: StreamID(UInt32(2 * index + 1)), payload: payload)))
        }
        var decoder = FrameDecoder()
        decoder.append(wire)
        var frames = 0
        while case .data? = try decoder.nextFrame() { frames += 1 }
        benchmark.stopMeasurement()
        precondition(frames == 64)
    }
}
