import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherCompression
import TetherRelay
import TetherTLS
import TetherTestSupport
import TetherWire
import Testing

/// SECURITY.md "Memory bound under attack": each attack, over mutual TLS, against a fresh
/// library-level hub in its own process (`TetherTarget`). For each, the hub stays up, its peak
/// resident memory (VmHWM) stays under the bound SECURITY.md states, a well-behaved edge's
/// streams keep flowing, the offender is cut off with the right code, and a metric counts it.
@Suite(.timeLimit(.minutes(5))) struct HostilePeerTests {
    static let fixtures = Loopback.fixtures

    /// The bound, read from SECURITY.md so the document and the test cannot drift apart.
    static let memoryBoundKiB: Int = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let text = (try? String(contentsOf: root.appendingPathComponent("SECURITY.md"), encoding: .utf8)) ?? ""
        let marker = "peak resident memory (VmHWM) under "
        guard let range = text.range(of: marker) else { return 0 }
        let number = text[range.upperBound...].prefix { $0.isNumber }
        return (Int(number) ?? 0) * 1_024
    }()

    /// What an attack sends after a valid preface, and how it must end.
    struct FrameAttack: Sendable, CustomTestStringConvertible {
        var name: String
        var code: ErrorCode
        var limit: String
        var bytes: @Sendable () -> ByteBuffer
        var testDescription: String { self.name }
    }

    static func frames(_ frames: [Frame]) -> ByteBuffer {
        var bytes = ByteBuffer()
        for frame in frames { bytes.writeFrame(frame) }
        return bytes
    }

    static func open(_ id: UInt32, service: String = "echo") -> Frame {
        .open(OpenFrame(streamID: StreamID(id), streamClass: .bulk, service: service))
    }

    static let attacks: [FrameAttack] = [
        FrameAttack(name: "OPEN/RESET storm", code: .enhanceYourCalm, limit: "reset-rate") {
            frames((0..<2_000).flatMap { index -> [Frame] in
                let id = UInt32(1 + 2 * index)
                return [open(id), .reset(ResetFrame(streamID: StreamID(id), code: .cancel, finalSize: 0))]
            })
        },
        FrameAttack(name: "refusal storm", code: .enhanceYourCalm, limit: "reset-rate") {
            frames((0..<2_000).map { open(UInt32(1 + 2 * $0), service: "no-such-service") })
        },
        FrameAttack(name: "PING flood", code: .enhanceYourCalm, limit: "glitch-budget") {
            frames((0..<5_000).map { .ping(PingFrame(ack: false, opaque: UInt64($0))) })
        },
        FrameAttack(name: "SETTINGS flood", code: .protocolError, limit: "none") {
            frames(Array(repeating: .settings(.values(Settings().entries)), count: 1_000))
        },
        FrameAttack(name: "endless empty DATA", code: .enhanceYourCalm, limit: "empty-frame-run") {
            frames([open(1)] + Array(repeating: .data(DataFrame(streamID: 1, payload: ByteBuffer())), count: 5_000))
        },
        FrameAttack(name: "CREDIT overflow", code: .flowControlError, limit: "none") {
            var bytes = ByteBuffer()
            bytes.writeFrameHeader(FrameHeader(length: 8, type: .credit, flags: 0, streamID: .connection))
            bytes.writeInteger(UInt64.max)
            return bytes
        },
        FrameAttack(name: "CREDIT backwards", code: .flowControlError, limit: "none") {
            frames([.credit(.connection(limit: 1_024))])
        },
        FrameAttack(name: "DATA beyond credit", code: .flowControlError, limit: "none") {
            frames([open(1, service: "hold")] + (0..<20).map { _ in .data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 1, count: 16_375))) })
        },
        FrameAttack(name: "1 MiB OPEN", code: .frameSizeError, limit: "none") {
            var bytes = ByteBuffer()
            bytes.writeFrameHeader(FrameHeader(length: 1 << 20, type: .open, flags: 0, streamID: 1))
            bytes.writeRepeatingByte(0x41, count: 1 << 20)
            return bytes
        },
        FrameAttack(name: "16 MiB frame length", code: .frameSizeError, limit: "none") {
            var bytes = ByteBuffer()
            bytes.writeFrameHeader(FrameHeader(length: (1 << 24) - 1, type: .data, flags: 0, streamID: 1))
            bytes.writeRepeatingByte(0, count: 65_536)
            return bytes
        },
        FrameAttack(name: "unknown frame types", code: .enhanceYourCalm, limit: "glitch-budget") {
            var bytes = ByteBuffer()
            for index in 0..<5_000 {
                bytes.writeFrameHeader(FrameHeader(length: 4, type: FrameType(rawValue: 0x20 + UInt8(index % 200)), flags: 0, streamID: .connection))
                bytes.writeInteger(UInt32(index))
            }
            return bytes
        },
    ]

    @Test(arguments: Self.attacks)
    func aHostileEdgeIsCutOffAndTheHubCarriesOn(_ attack: FrameAttack) async throws {
        // The attacks follow a valid preface; on a loaded machine this process may send it late,
        // and the attack must meet its own limit, not the preface timeout (TargetProcess.start).
        let target = try await TargetProcess.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let good = try await WellBehavedEdge.start(port: target.port, group: group)
        let offender = try await RawPeer.connect(
            to: try SocketAddress(ipAddress: "127.0.0.1", port: target.port), group: group,
            tls: try TLSContext(configuration: Self.fixtures.edge()))
        var preface = ByteBuffer()
        preface.writePreface(Settings())
        await offender.sendRaw(preface)
        await offender.sendRaw(attack.bytes())
        let goAway = await offender.goAwayUntilClosed()
        #expect(goAway?.code == attack.code, "\(attack.name): \(String(describing: goAway))")

        try await good.roundTrips(20)  // streams of the edge that behaves keep flowing
        let metrics = try await target.metrics()
        #expect(
            metrics.contains(#"tether_connection_errors_total{code="\#(attack.code.name)",limit="\#(attack.limit)"} 1"#),
            "\(metrics)")
        let peak = try await target.peakKiB()
        #expect(peak > 0 && peak < Self.memoryBoundKiB, "VmHWM \(peak) KiB, bound \(Self.memoryBoundKiB) KiB")
        await good.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    @Test func handshakesThatNeverFinishAreClosedAndCounted() async throws {
        // 2,000 sockets here and as many in the target: above Debian's default soft limit (1,024).
        let files = try FileDescriptorLimit.raiseToHardLimit()
        try #require(files >= 4_096, "RLIMIT_NOFILE's hard limit is \(files): this test needs 4,096 descriptors")
        let target = try await TargetProcess.start(handshakeTimeout: 2)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: target.port)
        // 2,000 connections that never send, and one that sends half a ClientHello and stops.
        var idle: [any Channel] = []
        for _ in 0..<2_000 {
            idle.append(try await ClientBootstrap(group: group).connect(to: address).get())
        }
        let slow = try await ClientBootstrap(group: group).connect(to: address).get()
        try await slow.writeAndFlush(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]))
        // A good edge connects and works while they hang.
        let good = try await WellBehavedEdge.start(port: target.port, group: group)
        try await good.roundTrips(20)
        // Every one of them is closed by the hub: waiting on the close, not on a clock.
        for channel in idle + [slow] { try await channel.closeFuture.get() }
        try await good.roundTrips(20)
        let metrics = try await target.metrics()
        let failures = Self.value(of: #"tether_tls_handshake_failures_total{reason="handshakeTimeout"}"#, in: metrics)
        #expect(failures >= 2_001, "\(metrics)")
        let peak = try await target.peakKiB()
        #expect(peak > 0 && peak < Self.memoryBoundKiB, "VmHWM \(peak) KiB, bound \(Self.memoryBoundKiB) KiB")
        await good.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    /// A plane client retrying against a backend that is down: 2,000 opens refused with
    /// CONNECT_ERROR as fast as the connection carries them. Refusals for the hub's own state never
    /// count against the edge (spec §12), so its connection — and every other stream on it — stays.
    @Test func refusalsForADownBackendNeverCutTheEdgeOff() async throws {
        let target = try await TargetProcess.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let edge = try await WellBehavedEdge.start(port: target.port, group: group)
        for _ in 0..<20 {
            try await withThrowingTaskGroup(of: Void.self) { streams in
                for _ in 0..<100 {
                    streams.addTask {
                        let stream = try await edge.connection.openStream(service: "down", class: .command)
                        let error = await #expect(throws: TetherError.self) {
                            for try await _ in stream.chunks {}
                        }
                        #expect(error?.errorCode == .connectError)
                    }
                }
                try await streams.waitForAll()
            }
        }
        try await edge.roundTrips(20)
        let metrics = try await target.metrics()
        #expect(!metrics.contains("tether_connection_errors_total{"), "\(metrics)")
        await edge.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    /// spec §9.4: a LOGS stream whose frames inflate without end — 32,768 frames of 64 KiB of
    /// zeros, 2 GiB from about 2.6 MB on the wire — becomes a stream error at the per-stream
    /// limit (1 GiB), the hub inflating as it reads into bounded output: its peak resident memory
    /// (VmHWM, the target's own) stays under the bound although a GiB went through zlib.
    @Test func aDecompressionBombIsAStreamErrorAndTheHubsMemoryStaysFlat() async throws {
        let target = try await TargetProcess.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let good = try await WellBehavedEdge.start(port: target.port, group: group)
        let bomber = try await WellBehavedEdge.start(port: target.port, group: group)
        let stream = try await bomber.connection.openStream(service: "inflate", class: .logs, compression: .deflate)
        let handle = stream.handle
        let level9 = { var parameters = DeflateParameters(); parameters.level = 9; return parameters }()
        let deflater = try Deflater(parameters: level9)
        var first = ByteBuffer()
        try deflater.compress(ByteBuffer(repeating: 0, count: 65_536), into: &first)
        // With the context warm, each further unit of zeros is the same few octets.
        var warm = ByteBuffer()
        try deflater.compress(ByteBuffer(repeating: 0, count: 65_536), into: &warm)
        var steady = ByteBuffer()
        try deflater.compress(ByteBuffer(repeating: 0, count: 65_536), into: &steady)
        let units = [first, warm, steady]
        let sender = Task {
            for index in 0..<32_768 {
                let unit = units[min(index, 2)]
                try await handle.eventLoop.flatSubmit {
                    handle.writeCompressedUnit(unit, endMessage: false, resetContext: index == 0)
                }.get()
            }
        }
        let refused = await #expect(throws: TetherError.self) { try await sender.value }
        #expect(refused?.errorCode == .compressionError, "\(String(describing: refused))")
        // It was real: the hub inflated (and dropped) a GiB before the limit stopped it.
        // The hub's reader may still be taking the last octets inflated before the limit.
        var inflated = 0
        for _ in 0..<600 {
            inflated = Self.value(of: "tether_target_inflated_octets_total", in: try await target.metrics())
            if inflated >= 1 << 30 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(inflated >= 1 << 30 && inflated <= (1 << 30) + 65_536, "\(inflated) octets inflated")
        try await good.roundTrips(20)
        let peak = try await target.peakKiB()
        #expect(peak > 0 && peak < Self.memoryBoundKiB, "VmHWM \(peak) KiB, bound \(Self.memoryBoundKiB) KiB")
        await bomber.close()
        await good.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    /// spec §9.4 on `tether target`'s event-loop `echo`, as an independent implementation found
    /// it: a compressed stream is read inflated (what comes back is the plain text, not the
    /// wire's DEFLATE octets), and octets that are not DEFLATE end it with COMPRESSION_ERROR.
    @Test func theEventLoopEchoInflatesAndRefusesWhatIsNotDeflate() async throws {
        let target = try await TargetProcess.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let edge = try await WellBehavedEdge.start(port: target.port, group: group)
        let stream = try await edge.connection.openStream(service: "echo", class: .logs, compression: .deflate)
        let text = CompressionTests.logText(lines: 200)
        try await stream.write(text, endMessage: true)
        try await stream.finish()
        var echoed = ByteBuffer()
        for try await var chunk in stream.chunks { echoed.writeBuffer(&chunk) }
        #expect(echoed == text)

        let garbled = try await edge.connection.openStream(service: "echo", class: .logs, compression: .deflate)
        let handle = garbled.handle
        let garbage = randomPayload(count: 4_096, seed: 3)
        try await handle.eventLoop.flatSubmit {
            handle.writeCompressedUnit(garbage, endMessage: true, resetContext: true)
        }.get()
        let error = await #expect(throws: TetherError.self) {
            for try await _ in garbled.chunks {}
        }
        #expect(error?.errorCode == .compressionError, "\(String(describing: error))")
        try await edge.roundTrips(2)  // the connection carries on
        await edge.connection.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    @Test func aReaderThatNeverReadsIsCutOffByKeepalive() async throws {
        // A PING after 1 s of silence and 8 s to answer it: the offender never does, and the
        // well-behaved edge has a margin that a loaded machine's stalls do not eat.
        let target = try await phase("start the target") {
            try await TargetProcess.start(keepaliveInterval: 1_000, keepaliveTimeout: 8)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let good = try await phase("connect the good edge") { try await WellBehavedEdge.start(port: target.port, group: group) }
        // The offender opens a firehose and never reads, from the moment the handshake is done.
        var hello = ByteBuffer()
        hello.writePreface(Settings())
        hello.writeFrame(Self.open(1, service: "firehose"))
        let offender = try await phase("connect the offender") {
            try await RawPeer.connect(
                to: try SocketAddress(ipAddress: "127.0.0.1", port: target.port), group: group,
                tls: try TLSContext(configuration: Self.fixtures.edge()), first: hello, reading: false)
        }
        // The hub sends until our windows and socket buffers are full, then waits; we never read.
        // It must cut us off (its PINGs go unanswered) without holding more than credit allows.
        while !(try await phase("read the metrics") { try await target.metrics() }).contains(#"code="KEEPALIVE_TIMEOUT""#) {
            try await phase("round trips while the offender waits") { try await good.roundTrips(1) }
            try await Task.sleep(for: .milliseconds(200))
        }
        try? await offender.channel.setOption(.autoRead, value: true).get()  // it may be closed already
        offender.channel.read()
        _ = await offender.goAwayUntilClosed()  // closed: reading to the end terminates
        try await phase("round trips after") { try await good.roundTrips(20) }
        let peak = try await target.peakKiB()
        #expect(peak > 0 && peak < Self.memoryBoundKiB, "VmHWM \(peak) KiB, bound \(Self.memoryBoundKiB) KiB")
        await good.close()
        try await group.shutdownGracefully()
        try await target.stop()
    }

    static func value(of series: String, in metrics: String) -> Int {
        metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }
            .flatMap { Int($0.split(separator: " ").last!) } ?? 0
    }
}

/// An edge that does what it should: echo round trips over mutual TLS.
struct WellBehavedEdge {
    let connection: TetherConnection

    static func start(port: Int, group: any EventLoopGroup) async throws -> WellBehavedEdge {
        let connection = try await TetherTransport.dial(
            group: group, to: try SocketAddress(ipAddress: "127.0.0.1", port: port),
            tls: try TLSContext(configuration: Loopback.fixtures.edge()), configuration: .init(role: .dialer))
        return WellBehavedEdge(connection: connection)
    }

    /// `count` echo streams, one after another, each 64 KiB there and back.
    func roundTrips(_ count: Int) async throws {
        for index in 0..<count {
            let stream = try await self.connection.openStream(service: "echo", class: .command)
            let payload = randomPayload(count: 65_536, seed: UInt64(index))
            try await stream.write(payload)
            try await stream.finish()
            var echoed = ByteBuffer()
            for try await var chunk in stream.chunks { echoed.writeBuffer(&chunk) }
            #expect(echoed == payload)
        }
    }

    func close() async {
        await self.connection.close()
    }
}

/// `TetherTarget` in its own process, built next to this test bundle by `swift test`.
final class TargetProcess: @unchecked Sendable {
    let process = Process()
    let input = Pipe()
    let output = Pipe()
    private(set) var port = 0
    private var buffer = Data()

    static var executable: URL {
        // .build/<triple>/debug/tetherPackageTests.xctest → .build/<triple>/debug/TetherTarget
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("TetherTarget")
    }

    /// The handshake and preface timeouts default to minutes, not the product's 10 s: the suite
    /// runs a dozen targets at once, and on a loaded machine a target can finish a handshake its
    /// peer already considers done more than 10 s later. A test of those timeouts sets them.
    static func start(
        handshakeTimeout: Double = 120, keepaliveInterval: Int = 15_000, keepaliveTimeout: Double = 20,
        prefaceTimeout: Double = 300
    ) async throws -> TargetProcess {
        let target = TargetProcess()
        guard FileManager.default.isExecutableFile(atPath: Self.executable.path) else {
            throw TetherTestError("\(Self.executable.path) is missing: `swift test` builds it with the tests")
        }
        let fixtures = Loopback.fixtures
        target.process.executableURL = Self.executable
        target.process.arguments = [
            "--certificate", fixtures.path("hub.pem"), "--key", fixtures.path("hub.key"),
            "--ca", fixtures.path("ca.pem"), "--handshake-timeout", "\(handshakeTimeout)",
            "--keepalive-interval", "\(keepaliveInterval)", "--keepalive-timeout", "\(keepaliveTimeout)",
            "--preface-timeout", "\(prefaceTimeout)",
        ]
        target.process.standardInput = target.input
        target.process.standardOutput = target.output
        try target.process.run()
        let line = try await target.line()
        guard line.hasPrefix("listening "), let port = Int(line.dropFirst("listening ".count)) else {
            throw TetherTestError("TetherTarget said \(line)")
        }
        target.port = port
        return target
    }

    /// The next line the process writes (reading blocks a thread of its own, not the test's).
    func line() async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                while true {
                    if let newline = self.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = String(decoding: self.buffer[..<newline], as: UTF8.self)
                        self.buffer.removeSubrange(...newline)
                        continuation.resume(returning: line)
                        return
                    }
                    let more = self.output.fileHandleForReading.availableData
                    guard !more.isEmpty else {
                        continuation.resume(throwing: TetherTestError("TetherTarget exited"))
                        return
                    }
                    self.buffer.append(more)
                }
            }
        }
    }

    func ask(_ command: String) throws {
        try self.input.fileHandleForWriting.write(contentsOf: Data((command + "\n").utf8))
    }

    /// The Prometheus text of the hub's metrics.
    func metrics() async throws -> String {
        try self.ask("metrics")
        var lines: [String] = []
        while true {
            let line = try await self.line()
            if line == "END" { return lines.joined(separator: "\n") }
            lines.append(line)
        }
    }

    /// The hub process's peak resident memory, KiB.
    func peakKiB() async throws -> Int {
        try self.ask("memory")
        let words = try await self.line().split(separator: " ")
        #expect(self.process.isRunning, "the hub stayed up")
        return words.count >= 2 ? Int(words[1]) ?? 0 : 0
    }

    func stop() async throws {
        try self.input.fileHandleForWriting.close()
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                self.process.waitUntilExit()
                continuation.resume()
            }
        }
    }
}

struct TetherTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs one phase of a test, naming it in any error it throws: "I/O on closed channel" alone
/// does not say which of a test's many channel operations met a closed channel.
func phase<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw TetherTestError("\(name): \(error)")
    }
}
