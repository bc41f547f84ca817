import NIOConcurrencyHelpers
import NIOCore
import TetherCompression
import TetherWire

/// The compression state of one stream (spec §9): the writer's batching, its compressor and
/// raw-fallback decision, and the reader's decompressor with its bomb limits. Contexts are made on
/// first use and freed after a while without use (spec §9.3), so idle streams hold none.
///
/// It is used off the event loop — compressing and inflating are the writer's and reader's work,
/// not the loop's (spec §9: deflate never stalls the loop other streams depend on) — so its state
/// sits behind a lock.
public final class StreamCodec: Sendable {
    public struct Configuration: Sendable {
        public var deflate = DeflateParameters()
        public var inflate = InflateLimits()
        /// Plain bytes are compressed once this many have been written (or at a message end, a
        /// flush, or `flushDelay` after the first of them).
        public var batch = 16_384
        public var flushDelay: TimeAmount = .milliseconds(10)
        /// A compressor unused this long is freed; the next unit resets the context (spec §9.3: 20 s).
        public var idleCompressor: TimeAmount = .seconds(20)
        /// A decompressor unused this long is freed (spec §9.3: 60 s).
        public var idleDecompressor: TimeAmount = .seconds(60)
        /// Compressed units that save less than this fraction switch the stream to raw frames for
        /// `rawFor` octets, then compression is tried again (spec §9.2: incompressible data goes raw).
        public var minimumSaving = 0.1
        public var rawFor = 1 << 20

        public init() {}
    }

    /// `@unchecked Sendable`: the zlib contexts inside are not thread-safe, and are only touched
    /// with the lock held.
    private struct State: @unchecked Sendable {
        var deflater: Deflater?
        var inflater: Inflater?
        var lastCompressed = NIODeadline.uptimeNanoseconds(0)
        var lastInflated = NIODeadline.uptimeNanoseconds(0)
        /// Written octets not yet compressed, and whether their last one ends a message.
        var pending = ByteBuffer()
        var pendingEndsMessage = false
        var flushScheduled = false
        /// Octets still to send raw after a poor ratio.
        var rawBudget = 0
    }

    public let configuration: Configuration
    private let state: NIOLockedValueBox<State>

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.state = NIOLockedValueBox(State())
    }

    /// A frame's worth of the writer's output: a compressed unit, or plain bytes to send raw.
    public struct Unit: Sendable {
        public var bytes: ByteBuffer
        public var compressed: Bool
        public var resetContext: Bool
        public var endsMessage: Bool
    }

    /// Adds written octets (nil for a flush) and hands the units that are ready — a batch is full,
    /// the write ends a message, or it is a flush — to `submit`, with the lock held, so units from
    /// concurrent writers and the flush timer reach the stream in the order the context made them.
    /// Each compressed unit is at most `maxUnit` octets. Throws ``CompressionError``.
    public func write<Result>(
        _ bytes: ByteBuffer?, endMessage: Bool = false, maxUnit: Int, now: NIODeadline,
        submit: ([Unit]) -> Result
    ) throws -> Result {
        try self.state.withLockedValue { state throws -> Result in
            if var bytes {
                state.pending.writeBuffer(&bytes)
                state.pendingEndsMessage = endMessage
                guard endMessage || state.pending.readableBytes >= self.configuration.batch else { return submit([]) }
            } else {
                state.flushScheduled = false
            }
            return submit(try self.drain(&state, complete: bytes == nil || endMessage, maxUnit: maxUnit, now: now))
        }
    }

    /// Whether octets wait for a flush and nobody has scheduled one yet; marks one scheduled.
    public func needsFlushTimer() -> Bool {
        self.state.withLockedValue { state in
            guard state.pending.readableBytes > 0, !state.flushScheduled else { return false }
            state.flushScheduled = true
            return true
        }
    }

    /// Turns pending octets into units. Unless `complete` (a flush or a message end), a tail too
    /// short to fill a unit stays pending for the next batch: a tiny unit costs a frame header and a
    /// sync flush, and would be judged incompressible.
    /// Units shorter than this are not judged for the raw fallback: their ratio says more about the
    /// sync flush than about the data.
    static let judgedUnit = 1_024

    private func drain(
        _ state: inout State, complete: Bool, maxUnit: Int, now: NIODeadline
    ) throws(CompressionError) -> [Unit] {
        var units: [Unit] = []
        while state.pending.readableBytes > 0 {
            if state.rawBudget > 0 {
                let length = min(state.pending.readableBytes, state.rawBudget)
                state.rawBudget -= length
                let bytes = state.pending.readSlice(length: length)!
                units.append(Unit(bytes: bytes, compressed: false, resetContext: false, endsMessage: false))
                continue
            }
            var reset = false
            if state.deflater == nil || now - state.lastCompressed >= self.configuration.idleCompressor {
                // A new context: the receiver learns of it from RESET_CONTEXT (spec §9.3).
                state.deflater = try Deflater(parameters: self.configuration.deflate)
                reset = true
            }
            let deflater = state.deflater!
            let fullUnit = deflater.maxInput(forPayload: maxUnit)
            guard fullUnit > 0 else { throw CompressionError(.limit, "no room for a compressed unit") }
            guard complete || state.pending.readableBytes >= fullUnit else { break }
            let length = min(state.pending.readableBytes, fullUnit)
            let input = state.pending.readSlice(length: length)!
            var output = ByteBuffer()
            try deflater.compress(input, into: &output)
            state.lastCompressed = now
            units.append(Unit(bytes: output, compressed: true, resetContext: reset, endsMessage: false))
            if length >= Self.judgedUnit, Double(output.readableBytes) > Double(length) * (1 - self.configuration.minimumSaving) {
                state.rawBudget = self.configuration.rawFor  // incompressible: go raw for a while
            }
        }
        if state.pending.readableBytes == 0 {
            if !units.isEmpty { units[units.count - 1].endsMessage = state.pendingEndsMessage }
            state.pending = ByteBuffer()
            state.pendingEndsMessage = false
        }
        return units
    }

    /// Inflates one COMPRESSED frame for the reader (spec §9.4).
    public func inflate(_ payload: ByteBuffer, resetContext: Bool, now: NIODeadline) throws -> ByteBuffer {
        try self.state.withLockedValue { state throws -> ByteBuffer in
            if resetContext || state.inflater == nil {
                guard resetContext || state.lastInflated + self.configuration.idleDecompressor > now
                    || state.lastInflated == .uptimeNanoseconds(0)
                else {
                    throw CompressionError(.invalidData, "a compressed frame after the context was freed, without RESET_CONTEXT")
                }
                let previous = state.inflater
                state.inflater = try Inflater(limits: self.configuration.inflate, carryingTotalsFrom: previous)
            }
            state.lastInflated = now
            return try state.inflater!.inflate(payload)
        }
    }

    /// Frees contexts unused for a while (spec §9.3). Returns the octets of context memory freed.
    @discardableResult
    public func freeIdle(now: NIODeadline) -> Int {
        self.state.withLockedValue { state in
            var freed = 0
            if state.deflater != nil, now - state.lastCompressed >= self.configuration.idleCompressor {
                state.deflater = nil
                freed += self.configuration.deflate.compressorBytes
            }
            if state.inflater != nil, now - state.lastInflated >= self.configuration.idleDecompressor {
                state.inflater = nil
                freed += DeflateParameters.decompressorBytes
            }
            return freed
        }
    }

    /// Whether any context is allocated (for tests and memory accounting).
    public var holdsContexts: Bool {
        self.state.withLockedValue { $0.deflater != nil || $0.inflater != nil }
    }
}
