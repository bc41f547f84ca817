// The whole user-space data path per MiB, without the kernel and without a second thread
// (`InMemoryTunnel`: a dialer and an acceptor on embedded channels, set up as sockets are, mutual
// TLS 1.3 then Tether, with the octets carried between them by hand). The baseline is the same
// MiB through our TLS handler alone. Mallocs per MiB are checked against `Thresholds/`; the time
// per MiB is `tether bench --only memory`'s to print (only counts go into thresholds).
import Benchmark
import TetherBench

let certificates = try! ThrowAwayCertificates()

/// Allocation counts barely move (the tunnel's windows tune on the clock): a run may exceed the
/// stored p90 by at most one allocation per record (64 per MiB); their timing moves them by ±40.
var allocationTolerance: [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: .init(relative: [.p90: 5.0], absolute: [.p90: 64])]
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal],
        scalingFactor: .one,
        maxDuration: .seconds(3),
        maxIterations: 1_000,
        thresholds: allocationTolerance
    )

    // One iteration = 1 MiB. (No spaces in the names: package-benchmark 1.38.1 writes threshold
    // files with them replaced but looks for them as they are.)
    for (name, tunnel) in [("allocations-per-MiB-tls-in-memory", false), ("allocations-per-MiB-tunnel-in-memory", true)] {
        Benchmark(name) { benchmark in
            let pair = try InMemoryTunnel(certificates: certificates, tunnel: tunnel)
            try pair.move(1 << 20)  // warm
            benchmark.startMeasurement()
            try pair.move(1 << 20)
            benchmark.stopMeasurement()
        }
    }
}
