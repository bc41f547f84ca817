import Foundation
import NIOCore
import Tether
import TetherWire

/// Event-loop workloads over ``TetherStreamHandle``s, the way a relay drives streams: no async
/// hops per chunk. Shared by `tether demo` and `tether bench`.
public enum Workloads {
    /// Writes `chunk` repeatedly until `octets` are written (or, when nil, until `stop` says so),
    /// then half-closes. Succeeds with the octets written.
    public static func push(
        _ handle: TetherStreamHandle, chunk: ByteBuffer, octets: Int?, endMessage: Bool = false,
        stop: @escaping () -> Bool = { false }, progress: @escaping (Int) -> Void = { _ in }
    ) -> EventLoopFuture<Int> {
        let promise = handle.eventLoop.makePromise(of: Int.self)
        var written = 0
        func step() {
            let remaining = octets.map { $0 - written } ?? Int.max
            guard remaining > 0, !stop() else {
                handle.finish().assumeIsolated().whenComplete { _ in promise.succeed(written) }
                return
            }
            let piece = remaining >= chunk.readableBytes ? chunk : chunk.getSlice(at: chunk.readerIndex, length: remaining)!
            handle.write(piece, endMessage: endMessage).assumeIsolated().whenComplete { result in
                switch result {
                case .success:
                    written += piece.readableBytes
                    progress(written)
                    step()
                case .failure(let error):
                    promise.fail(error)
                }
            }
        }
        step()
        return promise.futureResult
    }

    /// Reads a stream to its FIN, returning credit as it goes; succeeds with the octets read.
    public static func drain(_ handle: TetherStreamHandle, onChunk: @escaping (ByteBuffer) -> Void = { _ in })
        -> EventLoopFuture<Int>
    {
        let promise = handle.eventLoop.makePromise(of: Int.self)
        var total = 0
        var done = false
        func step() {
            guard !done else { return }
            var taken = 0
            while let read = handle.read() {
                total += read.bytes.readableBytes
                taken += read.wireOctets
                onChunk(read.bytes)
            }
            if taken > 0 { handle.consumed(taken) }
            if let failure = handle.failure {
                done = true
                handle.onReadable = nil
                return promise.fail(failure)
            }
            if handle.isReadEnded {
                done = true
                handle.onReadable = nil
                return promise.succeed(total)
            }
        }
        handle.onReadable = step
        step()
        return promise.futureResult
    }

    /// Reads one whole message (END_MSG), returning credit; nil when the stream ended first.
    public static func readMessage(_ handle: TetherStreamHandle) -> EventLoopFuture<ByteBuffer?> {
        let promise = handle.eventLoop.makePromise(of: ByteBuffer?.self)
        var message: ByteBuffer?
        func step() {
            while let read = handle.read() {
                var bytes = read.bytes
                if message == nil { message = bytes } else { message!.writeBuffer(&bytes) }
                handle.consumed(read.wireOctets)
                if read.endsMessage { return promise.succeed(message) }
            }
            if let failure = handle.failure { return promise.fail(failure) }
            if handle.isReadEnded { return promise.succeed(nil) }
            handle.waitForReadable().assumeIsolated().whenComplete { _ in step() }
        }
        step()
        return promise.futureResult
    }

    /// Serves the services the demo and the benchmark use, on the event loop:
    /// - `sink`: reads to FIN, answers with the octet count (8 octets, one message), finishes;
    /// - `echo`: sends every message back;
    /// - anything else: refused with `UNKNOWN_SERVICE`.
    public static func serve(_ handle: TetherStreamHandle, onChunk: @escaping (ByteBuffer) -> Void = { _ in }) {
        switch handle.service {
        case "sink", "metadata", "logs":
            self.drain(handle, onChunk: onChunk).assumeIsolated().whenSuccess { total in
                var answer = ByteBuffer()
                answer.writeInteger(UInt64(total))
                handle.write(answer, endMessage: true).assumeIsolated().whenComplete { _ in _ = handle.finish() }
            }
        case "echo":
            self.echo(handle)
        case "rss":
            // The serving process's resident memory, for `tether bench`'s idle-stream row.
            var answer = ByteBuffer()
            answer.writeInteger(UInt64(ProcessMemory.residentBytes()))
            handle.write(answer, endMessage: true).assumeIsolated().whenComplete { _ in _ = handle.finish() }
        case "cost":
            // The serving process's cost so far, for `tether bench`'s figures per octet.
            handle.write(ProcessCost.current().encoded(), endMessage: true).assumeIsolated().whenComplete { _ in _ = handle.finish() }
        case "idle":
            break  // held open, unread, until the peer ends it
        default:
            handle.reset(.unknownService)
        }
    }

    private static func echo(_ handle: TetherStreamHandle) {
        self.readMessage(handle).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let message?):
                handle.write(message, endMessage: true).assumeIsolated().whenComplete { _ in echo(handle) }
            case .success(nil):
                _ = handle.finish()
            case .failure:
                break
            }
        }
    }

    /// Sends `payload` as a message and waits for it to come back, again and again until
    /// `deadline`; succeeds with the round-trip times in microseconds.
    public static func pingPong(_ handle: TetherStreamHandle, payload: ByteBuffer, until deadline: NIODeadline)
        -> EventLoopFuture<Samples>
    {
        let promise = handle.eventLoop.makePromise(of: Samples.self)
        var samples = Samples()
        func step() {
            let start = NIODeadline.now()
            guard start < deadline else {
                _ = handle.finish()
                return promise.succeed(samples)
            }
            handle.write(payload, endMessage: true).assumeIsolated().flatMap { readMessage(handle) }.whenComplete {
                result in
                switch result {
                case .success(.some):
                    samples.add(Double((NIODeadline.now() - start).nanoseconds) / 1_000)
                    step()
                case .success(nil):
                    promise.succeed(samples)
                case .failure(let error):
                    promise.fail(error)
                }
            }
        }
        step()
        return promise.futureResult
    }

    /// Sends a `size`-octet message every `interval` until `deadline`, each carrying the time it was
    /// written, and times each one's echo: commands issued at a steady pace, independent of each
    /// other, so a link with a long round trip still yields thousands of samples (a one-at-a-time
    /// ping-pong gets one per round trip, and its p99 would be its second-worst sample). Succeeds
    /// with the round-trip times in microseconds once every echo is back.
    public static func probe(_ handle: TetherStreamHandle, size: Int, every interval: TimeAmount, until deadline: NIODeadline)
        -> EventLoopFuture<Samples>
    {
        precondition(size >= 8)
        let promise = handle.eventLoop.makePromise(of: Samples.self)
        var samples = Samples()
        func receive() {
            readMessage(handle).assumeIsolated().whenComplete { result in
                switch result {
                case .success(var message?):
                    let sent = message.readInteger(as: UInt64.self)!
                    samples.add(Double(NIODeadline.now().uptimeNanoseconds - sent) / 1_000)
                    receive()
                case .success(nil):
                    promise.succeed(samples)
                case .failure(let error):
                    promise.fail(error)
                }
            }
        }
        receive()
        var next = NIODeadline.now()
        func send() {
            let now = NIODeadline.now()
            guard now < deadline else {
                _ = handle.finish()  // the echo finishes after the last answer: `receive` ends then
                return
            }
            var message = ByteBuffer()
            message.writeInteger(now.uptimeNanoseconds)
            message.writeRepeatingByte(UInt8(ascii: "c"), count: size - 8)
            handle.write(message, endMessage: true).assumeIsolated().whenFailure { promise.fail($0) }
            next = max(next + interval, now)  // a late tick is not made up with a burst
            handle.eventLoop.assumeIsolated().scheduleTask(deadline: next) { send() }
        }
        send()
        return promise.futureResult
    }

    /// Random octets (xorshift), for payloads that do not compress.
    public static func randomBytes(_ count: Int, seed: UInt64 = 0x7e7e_7e7e) -> ByteBuffer {
        var state = seed | 1
        var buffer = ByteBufferAllocator().buffer(capacity: count + 8)
        for _ in 0..<(count + 7) / 8 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            buffer.writeInteger(state)
        }
        buffer.moveWriterIndex(to: count)
        return buffer
    }
}

/// This process's memory, from /proc/self/status.
enum ProcessMemory {
    /// VmRSS in octets.
    static func residentBytes() -> Int { self.field("VmRSS:") }

    /// VmHWM (peak resident) in octets.
    static func peakResidentBytes() -> Int { self.field("VmHWM:") }

    private static func field(_ name: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(name) {
            let kib = line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) } ?? 0
            return kib * 1_024
        }
        return 0
    }
}

/// Latency samples, reported as percentiles.
public struct Samples: Sendable {
    public private(set) var values: [Double] = []

    public mutating func add(_ value: Double) { self.values.append(value) }

    public mutating func merge(_ other: Samples) { self.values += other.values }

    public func percentile(_ p: Double) -> Double {
        guard !self.values.isEmpty else { return .nan }
        let sorted = self.values.sorted()
        let index = min(sorted.count - 1, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1)
        return sorted[max(0, index)]
    }

    public var count: Int { self.values.count }

    /// The distribution as `[percent, value]` pairs at fixed points, for the report's pictures.
    public var quantiles: [[Double]] {
        guard !self.values.isEmpty else { return [] }
        let sorted = self.values.sorted()
        let points = [0, 0.5, 1, 2.5] + stride(from: 5, through: 95, by: 5).map(Double.init) + [97.5, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.99, 100]
        return points.map { point in
            let index = min(sorted.count - 1, max(0, Int((point / 100 * Double(sorted.count)).rounded(.up)) - 1))
            return [point, sorted[index]]
        }
    }
}
