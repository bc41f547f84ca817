import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Tether
import TetherCompression
import TetherRelay
import TetherWire

/// `tether bench-compression` (spec §9): a realistic log stream compressed as the tunnel frames it,
/// against one-shot zlib at the same level on the same octets in the same run; the memory of 1,000
/// compressing streams; and the command round trip while 8 compressed log streams run.
struct BenchCompression: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compression",
        abstract: "Log compression as the tunnel frames it, against one-shot zlib; memory; latency under log load.")

    @Option(help: "Octets of generated log text.")
    var bytes: String = "64M"

    @Option(help: "Seconds of the latency phases.")
    var seconds: Double = 3

    @Flag(help: "Print the figures as JSON objects, one per line (the lines go to standard error).")
    var json = false

    struct Level: Encodable {
        var bench = "compression"
        var level: Int
        var framed_mb_per_s: Double
        var framed_ratio: Double
        var one_shot_mb_per_s: Double
        var one_shot_ratio: Double
    }

    struct Memory: Encodable {
        var bench = "compression-memory"
        var compressing_bytes_per_stream: Int
        var decompressing_bytes_per_stream: Int
    }

    struct Latency: Encodable {
        var bench = "compression-latency"
        var idle_p50_us: Double
        var idle_p99_us: Double
        var loaded_p50_us: Double
        var loaded_p99_us: Double
        var log_mb_per_s: Double
    }

    func run() async throws {
        guard let size = BenchThroughput.parseSize(self.bytes), size > 0 else { throw ValidationError("--bytes: a size such as 64M") }
        let output = BenchOutput(json: self.json)
        let log = Self.generateLog(octets: size)
        output.say("log text: \(log.readableBytes) octets of syslog/kubelet-style lines")
        let python = Self.pythonReference(log)
        for level in [Int32(1), 6] {
            let oneShot = try Self.oneShot(log, level: level)
            let framed = try Self.framed(log, level: level)
            var line = String(
                format: "level %d  framed %.1f MB/s ratio %.2f  |  one-shot zlib %.1f MB/s ratio %.2f  |  speed %.2f×, ratio %+.1f %%",
                level, framed.mbPerSecond, framed.ratio, oneShot.mbPerSecond, oneShot.ratio,
                framed.mbPerSecond / oneShot.mbPerSecond, 100 * (framed.ratio / oneShot.ratio - 1))
            if let reference = python[level] { line += String(format: "  (Python zlib %.1f MB/s ratio %.2f)", reference.0, reference.1) }
            output.say(line)
            output.record(
                Level(
                    level: Int(level), framed_mb_per_s: framed.mbPerSecond, framed_ratio: framed.ratio,
                    one_shot_mb_per_s: oneShot.mbPerSecond, one_shot_ratio: oneShot.ratio))
            let flushed = try Self.oneShot(log, level: level, flushEvery: 16_384)
            output.say(
                String(
                    format: "         zlib alone with a sync flush every 16 KiB, as frames need: %.1f MB/s ratio %.2f (%.2f× one-shot)",
                    flushed.mbPerSecond, flushed.ratio, flushed.mbPerSecond / oneShot.mbPerSecond))
            // What the stream's smaller window and memLevel cost, apart from the framing path: zlib
            // alone, flushed every 16 KiB, with the parameters a busy stream may afford (≤ 128 KB).
            for (windowBits, memLevel) in [(Int32(13), Int32(6)), (14, 6), (13, 7)] {
                let small = try Self.oneShot(log, level: level, flushEvery: 16_384, windowBits: windowBits, memLevel: memLevel)
                var parameters = DeflateParameters()
                parameters.windowBits = windowBits
                parameters.memLevel = memLevel
                output.say(
                    String(
                        format: "         … with window %d KiB, memLevel %d (%d KB a stream): %.1f MB/s ratio %.2f (%.2f× one-shot)",
                        1 << (windowBits - 10), memLevel, parameters.compressorBytes / 1_000, small.mbPerSecond,
                        small.ratio, small.mbPerSecond / oneShot.mbPerSecond))
            }
        }
        try Self.memory(output)
        try await Self.latency(log: log, seconds: self.seconds, output)
    }

    /// Syslog and kubelet lines with the variety real ones have: moving timestamps, pod and
    /// container names, request ids, durations.
    static func generateLog(octets: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(octets + 512)
        var random = UInt64(0x1234_5678_9ABC_DEF1)
        func next(_ bound: UInt64) -> UInt64 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return random % bound
        }
        let pods = ["web", "api", "worker", "redis", "postgres", "ingress-nginx", "coredns", "metrics-server"]
        let messages = [
            "\"SyncLoop (PLEG): event for pod\" pod=\"default/%@\" event={\"ID\":\"%@\",\"Type\":\"ContainerStarted\"}",
            "\"Probe failed\" probeType=\"Readiness\" pod=\"default/%@\" podUID=%@ containerName=\"app\"",
            "\"Volume detached for volume\" volume=\"kube-api-access-%@\" nodeName=\"node-1\" devicePath=\"%@\"",
            "\"RemoveContainer\" containerID=\"containerd://%@\" pod=\"kube-system/%@\"",
        ]
        var second = 0
        var line = 0
        while buffer.readableBytes < octets {
            line += 1
            if next(4) == 0 { second += 1 }
            let pod = "\(pods[Int(next(UInt64(pods.count)))])-\(String(next(0xFFFFF), radix: 16))"
            let id = String(next(UInt64.max >> 4), radix: 16)
            let template = messages[Int(next(UInt64(messages.count)))]
            let message = String(format: template, pod, id)
            let text = String(
                format: "Nov 27 %02d:%02d:%02d node-1 kubelet[%d]: I1127 %02d:%02d:%02d.%06d %d kubelet.go:%d] %@ duration=\"%dms\"\n",
                second / 3600 % 24, second / 60 % 60, second % 60, 1234, second / 3600 % 24, second / 60 % 60,
                second % 60, Int(next(1_000_000)), 1234, 2000 + Int(next(400)), message, Int(next(5000)))
            buffer.writeString(text)
        }
        return buffer
    }

    struct Result {
        var mbPerSecond: Double
        var ratio: Double
    }

    /// zlib's defaults (window 32 KiB, memLevel 8) over the whole text in one call, or — to show
    /// what framing alone costs — in calls of `flushEvery` octets, each ending in a sync flush.
    static func oneShot(
        _ log: ByteBuffer, level: Int32, flushEvery: Int? = nil, windowBits: Int32 = 15, memLevel: Int32 = 8
    ) throws -> Result {
        var parameters = DeflateParameters()
        parameters.level = level
        parameters.windowBits = windowBits
        parameters.memLevel = memLevel
        let deflater = try Deflater(parameters: parameters)
        var output = ByteBuffer()
        output.reserveCapacity(log.readableBytes)
        var input = log
        let start = NIODeadline.now()
        while input.readableBytes > 0 {
            try deflater.compress(input.readSlice(length: min(flushEvery ?? input.readableBytes, input.readableBytes))!, into: &output)
        }
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return Result(mbPerSecond: Double(log.readableBytes) / 1e6 / seconds, ratio: Double(log.readableBytes) / Double(output.readableBytes))
    }

    /// As the tunnel does it: the stream's compressor (8 KiB window, memLevel 6) batching 4 KiB
    /// writes into units that each fit one frame, sync-flushed, trailers stripped; the payloads are
    /// what goes on the wire.
    static func framed(_ log: ByteBuffer, level: Int32) throws -> Result {
        var configuration = CompressionConfiguration()
        configuration.deflate.level = level
        let compression = OutboundCompression(configuration: configuration, maxUnit: 16_375)
        var input = log
        var wire = 0
        let start = NIODeadline.now()
        while input.readableBytes > 0 {
            compression.append(input.readSlice(length: min(4_096, input.readableBytes))!, endMessage: false)  // a log shipper's writes
            wire += try Self.drain(compression)
        }
        compression.requestFlush()
        wire += try Self.drain(compression)
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return Result(mbPerSecond: Double(log.readableBytes) / 1e6 / seconds, ratio: Double(log.readableBytes) / Double(wire))
    }

    /// Runs the compressor until it waits; returns the octets it made.
    static func drain(_ compression: OutboundCompression) throws -> Int {
        var octets = 0
        while true {
            switch try compression.next(now: .now()) {
            case .idle:
                return octets
            case .raw(let bytes, _):
                octets += bytes.readableBytes
            case .deflate(let job):
                octets += compression.finished(job, try job.run().get(), now: .now()).readableBytes
            }
        }
    }

    /// Python's zlib on the same octets, as an independent reference (when python3 is there).
    static func pythonReference(_ log: ByteBuffer) -> [Int32: (Double, Double)] {
        let path = NSTemporaryDirectory() + "tether-log-\(getpid()).txt"
        guard FileManager.default.createFile(atPath: path, contents: Data(log.readableBytesView)) else { return [:] }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let script = """
            import sys, time, zlib
            data = open(sys.argv[1], 'rb').read()
            for level in (1, 6):
                start = time.perf_counter(); out = zlib.compress(data, level); took = time.perf_counter() - start
                print(level, len(data) / 1e6 / took, len(data) / len(out))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return [:] }
        process.waitUntilExit()
        var results: [Int32: (Double, Double)] = [:]
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 3, let level = Int32(parts[0]), let speed = Double(parts[1]), let ratio = Double(parts[2]) {
                results[level] = (speed, ratio)
            }
        }
        return results
    }

    /// Resident memory of 1,000 streams compressing (one unit each) and 1,000 decompressing.
    static func memory(_ output: BenchOutput) throws {
        let sample = generateLog(octets: 16_384)
        var compressors: [OutboundCompression] = []
        var unit: ByteBuffer?
        let before = ProcessMemory.residentBytes()
        for _ in 0..<1_000 {
            let compression = OutboundCompression(configuration: CompressionConfiguration(), maxUnit: 16_375)
            compression.append(sample, endMessage: true)
            guard case .deflate(let job) = try compression.next(now: .now()) else { continue }
            unit = compression.finished(job, try job.run().get(), now: .now())
            compressors.append(compression)
        }
        let compressing = ProcessMemory.residentBytes() - before
        let middle = ProcessMemory.residentBytes()
        var readers: [InboundInflation] = []
        for _ in 0..<1_000 {
            let inflation = InboundInflation(configuration: CompressionConfiguration())
            _ = try inflation.inflate(unit!, resetContext: true, now: .now())
            readers.append(inflation)
        }
        let decompressing = ProcessMemory.residentBytes() - middle
        let stated = CompressionConfiguration().deflate.compressorBytes
        output.record(Memory(compressing_bytes_per_stream: compressing / 1_000, decompressing_bytes_per_stream: decompressing / 1_000))
        output.say(
            "memory: 1,000 compressing streams \(compressing >> 20) MiB (\(compressing / 1_000) B each; zlib's formula "
                + "says \(stated) B); 1,000 decompressing \(decompressing >> 20) MiB (\(decompressing / 1_000) B each); "
                + "idle streams hold no context")
        withExtendedLifetime((compressors, readers)) {}
    }

    /// The command round trip with no other traffic, then while 8 compressed log streams run.
    static func latency(log: ByteBuffer, seconds: Double, _ output: BenchOutput) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (connections, accepted) = AsyncStream<TetherConnection>.makeStream()
        let hub = try await TetherTransport.listen(
            group: group, host: "127.0.0.1", port: 0, tls: nil, configuration: .init(role: .acceptor),
            onConnection: { accepted.yield($0) })
        let edge = try await TetherTransport.dial(
            group: group, to: hub.localAddress!, tls: nil, configuration: .init(role: .dialer),
            inboundStreamHandler: { Workloads.serve($0) })
        var iterator = connections.makeAsyncIterator()
        guard let plane = await iterator.next() else { return }
        let readers = Task {
            try await withThrowingDiscardingTaskGroup { group in
                for try await stream in plane.inboundStreams {
                    group.addTask { for try await _ in stream.chunks {} }
                }
            }
        }
        func ping() async throws -> Samples {
            let command = try await plane.openStream(service: "echo", class: .command).handle
            let deadline = NIODeadline.now() + .nanoseconds(Int64(seconds * 1e9))
            let payload = ByteBuffer(repeating: UInt8(ascii: "c"), count: 64)
            return try await command.eventLoop.flatSubmit { Workloads.pingPong(command, payload: payload, until: deadline) }.get()
        }
        let idle = try await ping()
        let stop = NIOLockedValueBox(false)
        let written = NIOLockedValueBox(0)
        var writers: [Task<Void, any Error>] = []
        for index in 0..<8 {
            let stream = try await edge.openStream(service: "logs/\(index)", class: .logs)  // deflate by default
            writers.append(
                Task {
                    var text = log
                    while !stop.withLockedValue({ $0 }) {
                        if text.readableBytes < 4_096 { text = log }
                        let piece = text.readSlice(length: 4_096)!
                        try await stream.write(piece)
                        written.withLockedValue { $0 += 4_096 }
                    }
                    try await stream.finish()
                })
        }
        let started = NIODeadline.now()
        let loaded = try await ping()
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        stop.withLockedValue { $0 = true }
        for writer in writers { try? await writer.value }
        let rate = Double(written.withLockedValue { $0 }) / 1e6 / elapsed
        output.record(
            Latency(
                idle_p50_us: idle.percentile(50), idle_p99_us: idle.percentile(99), loaded_p50_us: loaded.percentile(50),
                loaded_p99_us: loaded.percentile(99), log_mb_per_s: rate))
        output.say(
            String(
                format: "command round trip: idle p50 %.0f µs p99 %.0f µs; with 8 compressed log streams (%.0f MB/s of log text) p50 %.0f µs p99 %.0f µs",
                idle.percentile(50), idle.percentile(99), rate, loaded.percentile(50), loaded.percentile(99)))
        readers.cancel()
        await edge.close()
        try await hub.close()
        try await group.shutdownGracefully()
    }
}
