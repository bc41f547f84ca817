// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "tether",
    products: [
        .library(name: "TetherWire", targets: ["TetherWire"]),
        .library(name: "TetherSession", targets: ["TetherSession"]),
        .library(name: "Tether", targets: ["Tether"]),
        .library(name: "TetherTLS", targets: ["TetherTLS"]),
        .library(name: "TetherCompression", targets: ["TetherCompression"]),
        .library(name: "TetherPolicy", targets: ["TetherPolicy"]),
        .library(name: "TetherRelay", targets: ["TetherRelay"]),
        // The benchmarks' workloads and harnesses, for the package-benchmark suites in Benchmarks/.
        .library(name: "TetherBench", targets: ["TetherBench"]),
        .executable(name: "tether", targets: ["TetherCommand"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        // The relays' admin endpoints; without its default traits (swift-configuration, full Foundation).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // Wire codec: frame types, encoder, resumable decoder. Pure; NIOCore only. spec/PROTOCOL.md §3–§5.
        .target(
            name: "TetherWire",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // Session: connection and stream state machines, flow control, scheduler, keepalive, drain.
        // Pure values returning events; the clock is injected. spec/PROTOCOL.md §3, §6–§12.
        .target(
            name: "TetherSession",
            dependencies: ["TetherWire", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // The channel handler that runs a session, the event-loop stream handle relays splice into,
        // and the async API over both. NIOCore only: callers pick the runtime.
        .target(
            name: "Tether",
            dependencies: [
                "TetherSession", "TetherWire", "TetherCompression", "TetherPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Relays and their plumbing: transports (TLS, admission, then Tether), the splicer between
        // sockets and streams, the listener and dialer services; later the edge and the hub.
        .target(
            name: "TetherRelay",
            dependencies: [
                "Tether", "TetherTLS", "TetherSession", "TetherWire", "TetherPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // The benchmarks `tether bench` runs (throughput, latency, the policy filter, compression),
        // their workloads and far end, and the emulated WAN link (a delay line) the tests use too.
        .target(
            name: "TetherBench",
            dependencies: [
                "Tether", "TetherRelay", "TetherTLS", "TetherSession", "TetherWire", "TetherCompression",
                "TetherPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The `tether` executable: the product's commands (demo, bench, certs; later edge, hub,
        // check-config).
        // mallopt for the executable (Swift's Glibc module does not import malloc.h).
        .target(name: "CMalloc"),
        .executableTarget(
            name: "TetherCommand",
            dependencies: [
                "CMalloc",
                "Tether", "TetherRelay", "TetherTLS", "TetherSession", "TetherWire", "TetherBench",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // `TetherTarget`: a hub built from the library alone, in its own process, that the
        // hostile-peer tests attack (SECURITY.md). Built with the tests; not a product.
        .executableTarget(
            name: "TetherTarget",
            dependencies: [
                "Tether", "TetherRelay", "TetherTLS", "TetherWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The system's OpenSSL 3 (libssl-dev): a module map and a shim for what OpenSSL offers only as macros.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // TLS 1.3 with mutual authentication on OpenSSL, a BIO over ByteBuffers, and a NIO handler.
        // spec/PROTOCOL.md §2.
        .target(
            name: "TetherTLS",
            dependencies: [
                "COpenSSL", "TetherWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The system's zlib (zlib1g-dev): a module map and a shim for its init macros.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // Per-stream raw DEFLATE with context takeover and bomb limits. spec/PROTOCOL.md §9.
        .target(
            name: "TetherCompression",
            dependencies: ["CZlib", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // The default-deny allowlist: stream rules, the METADATA field filter, the policy file.
        // Pure values, no I/O but reading the file. spec/POLICY.md.
        .target(
            name: "TetherPolicy",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // Reads spec/vectors/ for the test targets; not a product.
        .target(
            name: "TetherTestSupport",
            dependencies: ["TetherWire", "TetherSession", "TetherTLS", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // libFuzzer targets (fuzz/README.md). Built normally they are inert executables; `fuzz/run` builds them
        // with -sanitize=fuzzer,address.
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: ["TetherWire", .product(name: "NIOCore", package: "swift-nio")],
            path: "fuzz/FrameDecoder"
        ),
        .executableTarget(
            name: "FuzzSession",
            dependencies: ["TetherSession", "TetherWire", .product(name: "NIOCore", package: "swift-nio")],
            path: "fuzz/Session"
        ),
        .executableTarget(
            name: "FuzzTLSRecords",
            dependencies: [
                "TetherTLS", "TetherWire", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "fuzz/TLSRecords"
        ),
        .executableTarget(
            name: "FuzzInflate",
            dependencies: ["TetherCompression", .product(name: "NIOCore", package: "swift-nio")],
            path: "fuzz/Inflate"
        ),
        .executableTarget(
            name: "FuzzPolicyFilter",
            dependencies: ["TetherPolicy"],
            path: "fuzz/PolicyFilter"
        ),
        .testTarget(
            name: "TetherWireTests",
            dependencies: ["TetherWire", "TetherTestSupport"]
        ),
        .testTarget(
            name: "TetherTests",
            dependencies: [
                "Tether", "TetherRelay", "TetherTLS", "TetherSession", "TetherWire", "TetherTestSupport",
                "TetherCompression", "TetherPolicy", "TetherBench",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["node-web-server.py", "log-writer.py"]
        ),
        .testTarget(
            name: "TetherTLSTests",
            dependencies: [
                "TetherTLS", "TetherWire", "TetherTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "TetherCompressionTests",
            dependencies: ["TetherCompression", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "TetherPolicyTests",
            dependencies: ["TetherPolicy"]
        ),
        .testTarget(
            name: "TetherCommandTests",
            dependencies: ["TetherCommand", "TetherBench", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "TetherSessionTests",
            dependencies: ["TetherSession", "TetherWire", "TetherTestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
