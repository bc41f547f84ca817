// swift-tools-version:6.3
// Benchmarks for Tether, run with package-benchmark:
//
//     cd Benchmarks && swift package benchmark
//
// A separate package so the main build and tests never build the benchmark harness.
import Foundation
import PackageDescription

// A path dependency is identified by its directory's name, which is whatever the checkout is called.
let tether = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent()
let tetherIdentity = tether.lastPathComponent.lowercased()

let package = Package(
    name: "TetherBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "WireCodec",
            dependencies: [
                .product(name: "TetherWire", package: tetherIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/WireCodec",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Tunnel",
            dependencies: [
                .product(name: "TetherBench", package: tetherIdentity),
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/Tunnel",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Session",
            dependencies: [
                .product(name: "TetherSession", package: tetherIdentity),
                .product(name: "TetherWire", package: tetherIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/Session",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
