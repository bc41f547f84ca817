import Foundation
import NIOCore
import NIOPosix
import Tether
import TetherCompression
import TetherSession
import TetherWire
import Testing

/// spec §9 end to end: LOGS compress by default, incompressible data goes raw, contexts reset
/// after idling, and a decompression bomb becomes a stream error with flat memory.
@Suite struct CompressionTests {
    static func logText(lines: Int, seed: Int = 0) -> ByteBuffer {
        var text = ""
        for index in seed..<(seed + lines) {
            text += "Nov 27 00:00:\(10 + index % 50) node-1 kubelet[1234]: I1127 pod_workers.go:\(900 + index % 97)] "
            text += "\"SyncLoop (PLEG): event for pod\" pod=\"default/web-\(index % 7)\" event=ContainerStarted\n"
        }
        return ByteBuffer(string: text)
    }

    /// Reads a stream to its end and returns everything.
    static func readAll(_ stream: TetherStream) async throws -> ByteBuffer {
        var all = ByteBuffer()
        for try await var chunk in stream.chunks { all.writeBuffer(&chunk) }
        return all
    }

    @Test(arguments: Transport.allCases)
    func logStreamsCompressByDefault(_ transport: Transport) async throws {
        let loopback = try await Loopback.start(transport)
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await Self.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/kubelet", class: .logs)
        var sent = ByteBuffer()
        for batch in 0..<50 {
            // Small writes, as a log shipper makes them: the stream batches before each sync flush.
            for line in 0..<40 {
                let text = Self.logText(lines: 1, seed: batch * 40 + line)
                sent.writeImmutableBuffer(text)
                try await stream.write(text)
            }
        }
        try await stream.finish()
        #expect(try await received.value == sent)
        let wire = try await loopback.dialer.counters().dataOctetsSent
        #expect(wire * 3 < sent.readableBytes, "\(wire) octets on the wire for \(sent.readableBytes)")
        try await loopback.stop()
    }

    @Test func incompressibleDataGoesRaw() async throws {
        let loopback = try await Loopback.start()
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await Self.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/binary", class: .logs)
        let payload = randomPayload(count: 2 << 20, seed: 5)
        try await stream.write(payload)
        try await stream.finish()
        #expect(try await received.value == payload)
        let wire = try await loopback.dialer.counters().dataOctetsSent
        // One probe unit may come out slightly larger; the rest goes raw.
        #expect(wire < payload.readableBytes + 4_096)
        try await loopback.stop()
    }

    @Test func aCompressorFreedWhileIdleResetsTheContext() async throws {
        var configuration = TetherConnectionHandler.Configuration(role: .dialer)
        configuration.codec.idleCompressor = .milliseconds(50)
        let loopback = try await Loopback.start(dialer: configuration)
        let received = Task { () -> ByteBuffer? in
            for try await stream in loopback.acceptor.inboundStreams { return try await Self.readAll(stream) }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/app", class: .logs)
        var sent = ByteBuffer()
        for round in 0..<3 {
            let text = Self.logText(lines: 300, seed: round)
            sent.writeImmutableBuffer(text)
            try await stream.write(text)
            try await stream.flush()
            // Long enough that the next unit comes from a new context, which only works if the
            // receiver learns of it (RESET_CONTEXT): otherwise it inflates garbage or fails.
            try await Task.sleep(for: .milliseconds(120))
        }
        try await stream.finish()
        #expect(try await received.value == sent)
        try await loopback.stop()
    }

    @Test func aDecompressionBombIsAStreamErrorAndMemoryStaysFlat() async throws {
        // A per-stream limit of 1.5 GiB, so what a leak would hold dwarfs what the other suites,
        // running in parallel in this process, allocate meanwhile.
        var acceptor = TetherConnectionHandler.Configuration(role: .acceptor)
        acceptor.codec.inflate.perStream = 3 << 29
        let loopback = try await Loopback.start(acceptor: acceptor)
        let outcome = Task { () -> (inflated: Int, error: TetherError?)? in
            for try await stream in loopback.acceptor.inboundStreams {
                var inflated = 0
                do {
                    for try await chunk in stream.chunks { inflated += chunk.readableBytes }
                    return (inflated, nil)
                } catch let error as TetherError {
                    return (inflated, error)
                }
            }
            return nil
        }
        let stream = try await loopback.dialer.openStream(service: "logs/bomb", class: .logs)
        let handle = stream.handle
        // 65,536 zeros compress to about 80 octets at level 9. 32,768 such frames would inflate to
        // 2 GiB from about 2.6 MB on the wire; the per-stream limit (1.5 GiB) stops it.
        let bomber = try Deflater(parameters: { var p = DeflateParameters(); p.level = 9; return p }())
        var first = ByteBuffer()
        try bomber.compress(ByteBuffer(repeating: 0, count: 65_536), into: &first)
        let unit = first
        let repeatable = try Deflater(parameters: { var p = DeflateParameters(); p.level = 9; return p }())
        var next = ByteBuffer()
        try repeatable.compress(ByteBuffer(repeating: 0, count: 65_536), into: &next)
        try repeatable.compress(ByteBuffer(repeating: 0, count: 65_536), into: &next)
        // With the context warm, each further unit of zeros is the same few octets.
        var warm = ByteBuffer()
        try repeatable.compress(ByteBuffer(repeating: 0, count: 65_536), into: &warm)
        let steady = warm
        let before = ProcessMemory.resident()
        let sender = Task {
            try await handle.eventLoop.flatSubmit {
                handle.writeCompressedUnit(unit, endMessage: false, resetContext: true)
            }.get()
            for _ in 0..<32_768 {
                try await handle.eventLoop.flatSubmit {
                    handle.writeCompressedUnit(steady, endMessage: false, resetContext: false)
                }.get()
            }
        }
        let result = try #require(await outcome.value)
        #expect(result.error?.code == .compression)
        #expect(result.inflated <= 3 << 29)
        #expect(result.inflated >= 1 << 30)  // it was real: over a GiB was inflated and dropped
        // Resident memory of the whole test process, while other suites run in parallel: what
        // tells bounded from unbounded is that it grows by a small fraction of the ≥ 1 GiB that
        // was inflated, which holding the output anywhere would add in full.
        let growth = ProcessMemory.resident() - before
        #expect(growth < 512 << 20, "resident memory grew \(growth >> 20) MiB while \(result.inflated >> 20) MiB were inflated")
        // The sender sees its stream reset with COMPRESSION_ERROR.
        let refused = await #expect(throws: TetherError.self) { try await sender.value }
        #expect(refused?.errorCode == .compressionError)
        try await loopback.stop()
    }
}

/// This process's resident memory (VmRSS), in octets.
enum ProcessMemory {
    static func resident() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return kib * 1_024
    }
}
