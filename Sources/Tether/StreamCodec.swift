import NIOConcurrencyHelpers
import NIOCore
import TetherCompression
import TetherWire

/// The compression state of one stream (spec §9): the writer's batching, its compressor and
/// raw-fallback decision, and the reader's decompressor with its bomb limits. Contexts are made on
/// first use and freed after a while without use (spec §9.3), so idle streams hold none.
///
/// It is used off the event loop — compressing and inflating are the writer's and reader's work,
/// not the loop's (spec §9: deflate never stalls the loop other streams depend on). Two kinds of
/// lock keep it so: the writer's and the reader's locks serialize each side and are held across
/// deflate and inflate, and are never taken on the event loop; `contexts` guards which contexts
/// exist and whether one is in use, and is only ever held for a few assignments — the event
/// loop's idle sweep (``freeIdle(now:)``) takes only that one, so it never waits for compression.
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
        /// How often the connection looks for idle contexts to free while streams have codecs.
        public var sweepInterval: TimeAmount = .seconds(10)
        /// Compressed units that save less than this fraction switch the stream to raw frames for
        /// `rawFor` octets, then compression is tried again (spec §9.2: incompressible data goes raw).
        public var minimumSaving = 0.1
        public var rawFor = 1 << 20

        public init() {}
    }

    /// Which contexts exist and whether one is being used. `@unchecked Sendable`: the zlib contexts
    /// are not thread-safe; one is touched only by the side that checked it out (`…InUse`).
    private struct Contexts: @unchecked Sendable {
        var deflater: Deflater?
        var deflaterInUse = false
        var lastCompressed = NIODeadline.uptimeNanoseconds(0)
        var inflater: Inflater?
        var inflaterInUse = false
        var lastInflated = NIODeadline.uptimeNanoseconds(0)
        /// COMPRESSED frames delivered to the stream and not yet inflated: the decompressor they
        /// need is not idle, however long the reader takes to reach them.
        var compressedFramesWaiting = 0
        var flushScheduled = false
    }

    /// The writer's batching, under the writer's lock.
    private struct Batch: Sendable {
        /// Written octets not yet compressed, and whether their last one ends a message.
        var pending = ByteBuffer()
        var pendingEndsMessage = false
        /// Octets still to send raw after a poor ratio.
        var rawBudget = 0
    }

    public let configuration: Configuration
    private let contexts: NIOLockedValueBox<Contexts>
    private let writer: NIOLockedValueBox<Batch>
    private let reader: NIOLock

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.contexts = NIOLockedValueBox(Contexts())
        self.writer = NIOLockedValueBox(Batch())
        self.reader = NIOLock()
    }

    /// A frame's worth of the writer's output: a compressed unit, or plain bytes to send raw.
    public struct Unit: Sendable {
        public var bytes: ByteBuffer
        public var compressed: Bool
        public var resetContext: Bool
        public var endsMessage: Bool
    }

    /// Adds written octets (nil for a flush) and hands the units that are ready — a batch is full,
    /// the write ends a message, or it is a flush — to `submit`, with the writer's lock held, so
    /// units from concurrent writers and the flush timer reach the stream in the order the context
    /// made them. Each compressed unit is at most `maxUnit` octets. Throws ``CompressionError``.
    public func write<Result>(
        _ bytes: ByteBuffer?, endMessage: Bool = false, maxUnit: Int, now: NIODeadline,
        submit: ([Unit]) -> Result
    ) throws -> Result {
        try self.writer.withLockedValue { batch throws -> Result in
            if var bytes {
                batch.pending.writeBuffer(&bytes)
                batch.pendingEndsMessage = endMessage
                guard endMessage || batch.pending.readableBytes >= self.configuration.batch else { return submit([]) }
            } else {
                self.contexts.withLockedValue { $0.flushScheduled = false }
            }
            return submit(try self.drain(&batch, complete: bytes == nil || endMessage, maxUnit: maxUnit, now: now))
        }
    }

    /// Whether octets wait for a flush and nobody has scheduled one yet; marks one scheduled.
    public func needsFlushTimer() -> Bool {
        let pending = self.writer.withLockedValue { $0.pending.readableBytes }
        return self.contexts.withLockedValue { contexts in
            guard pending > 0, !contexts.flushScheduled else { return false }
            contexts.flushScheduled = true
            return true
        }
    }

    /// Units shorter than this are not judged for the raw fallback: their ratio says more about the
    /// sync flush than about the data.
    static let judgedUnit = 1_024

    /// Turns pending octets into units. Unless `complete` (a flush or a message end), a tail too
    /// short to fill a unit stays pending for the next batch: a tiny unit costs a frame header and a
    /// sync flush, and would be judged incompressible.
    private func drain(
        _ batch: inout Batch, complete: Bool, maxUnit: Int, now: NIODeadline
    ) throws(CompressionError) -> [Unit] {
        var units: [Unit] = []
        while batch.pending.readableBytes > 0 {
            if batch.rawBudget > 0 {
                let length = min(batch.pending.readableBytes, batch.rawBudget)
                batch.rawBudget -= length
                let bytes = batch.pending.readSlice(length: length)!
                units.append(Unit(bytes: bytes, compressed: false, resetContext: false, endsMessage: false))
                continue
            }
            let (deflater, reset) = try self.checkOutDeflater(now: now)
            defer { self.contexts.withLockedValue { $0.deflaterInUse = false } }
            let fullUnit = deflater.maxInput(forPayload: maxUnit)
            guard fullUnit > 0 else { throw CompressionError(.limit, "no room for a compressed unit") }
            guard complete || batch.pending.readableBytes >= fullUnit else { break }
            let length = min(batch.pending.readableBytes, fullUnit)
            let input = batch.pending.readSlice(length: length)!
            var output = ByteBuffer()
            try deflater.compress(input, into: &output)  // no lock the event loop takes is held
            self.contexts.withLockedValue { $0.lastCompressed = now }
            units.append(Unit(bytes: output, compressed: true, resetContext: reset, endsMessage: false))
            if length >= Self.judgedUnit, Double(output.readableBytes) > Double(length) * (1 - self.configuration.minimumSaving) {
                batch.rawBudget = self.configuration.rawFor  // incompressible: go raw for a while
            }
        }
        if batch.pending.readableBytes == 0 {
            if !units.isEmpty { units[units.count - 1].endsMessage = batch.pendingEndsMessage }
            batch.pending = ByteBuffer()
            batch.pendingEndsMessage = false
        }
        return units
    }

    /// The compressor, marked in use so the idle sweep leaves it alone; a new one — whose first
    /// unit carries RESET_CONTEXT (spec §9.3) — when there is none or it idled too long.
    private func checkOutDeflater(now: NIODeadline) throws(CompressionError) -> (Deflater, reset: Bool) {
        let current: Deflater? = self.contexts.withLockedValue { contexts in
            contexts.deflaterInUse = true
            guard let deflater = contexts.deflater, now - contexts.lastCompressed < self.configuration.idleCompressor
            else { return nil }
            return deflater
        }
        if let current { return (current, false) }
        let fresh: Deflater
        do {
            fresh = try Deflater(parameters: self.configuration.deflate)
        } catch {
            self.contexts.withLockedValue { $0.deflaterInUse = false }
            throw error
        }
        self.contexts.withLockedValue { $0.deflater = fresh }
        return (fresh, true)
    }

    /// A COMPRESSED frame was delivered to the stream (on the event loop): its decompressor is
    /// busy until the reader inflates it, however long that takes.
    public func noteCompressedFrame() {
        self.contexts.withLockedValue { $0.compressedFramesWaiting += 1 }
    }

    /// Inflates one COMPRESSED frame for the reader (spec §9.4).
    public func inflate(_ payload: ByteBuffer, resetContext: Bool, now: NIODeadline) throws -> ByteBuffer {
        try self.reader.withLock { () throws -> ByteBuffer in
            let inflater = try self.checkOutInflater(resetContext: resetContext, now: now)
            defer {
                self.contexts.withLockedValue { contexts in
                    contexts.inflaterInUse = false
                    contexts.lastInflated = now
                    contexts.compressedFramesWaiting = max(0, contexts.compressedFramesWaiting - 1)
                }
            }
            return try inflater.inflate(payload)  // no lock the event loop takes is held
        }
    }

    /// The decompressor, marked in use; a new one on RESET_CONTEXT or for the first frame. A frame
    /// without RESET_CONTEXT after the decompressor was freed is a stream error (spec §9.3).
    private func checkOutInflater(resetContext: Bool, now: NIODeadline) throws -> Inflater {
        let (current, lastInflated) = self.contexts.withLockedValue { contexts -> (Inflater?, NIODeadline) in
            contexts.inflaterInUse = true
            return (contexts.inflater, contexts.lastInflated)
        }
        if let current, !resetContext { return current }
        do {
            guard resetContext || current != nil || lastInflated == .uptimeNanoseconds(0) else {
                throw CompressionError(.invalidData, "a compressed frame after the context was freed, without RESET_CONTEXT")
            }
            let fresh = try Inflater(limits: self.configuration.inflate, carryingTotalsFrom: current)
            self.contexts.withLockedValue { $0.inflater = fresh }
            return fresh
        } catch {
            self.contexts.withLockedValue { contexts in
                contexts.inflaterInUse = false
                contexts.compressedFramesWaiting = max(0, contexts.compressedFramesWaiting - 1)
            }
            throw error
        }
    }

    /// Frees contexts unused for a while (spec §9.3) — never one in use, nor a decompressor that
    /// delivered frames still wait for. Returns the octets of context memory freed. Takes only the
    /// short `contexts` lock: the event loop calls it.
    @discardableResult
    public func freeIdle(now: NIODeadline) -> Int {
        self.contexts.withLockedValue { contexts in
            var freed = 0
            if contexts.deflater != nil, !contexts.deflaterInUse,
                now - contexts.lastCompressed >= self.configuration.idleCompressor
            {
                contexts.deflater = nil
                freed += self.configuration.deflate.compressorBytes
            }
            if contexts.inflater != nil, !contexts.inflaterInUse, contexts.compressedFramesWaiting == 0,
                now - contexts.lastInflated >= self.configuration.idleDecompressor
            {
                contexts.inflater = nil
                freed += DeflateParameters.decompressorBytes
            }
            return freed
        }
    }

    /// Whether any context is allocated (for tests and memory accounting).
    public var holdsContexts: Bool {
        self.contexts.withLockedValue { $0.deflater != nil || $0.inflater != nil }
    }

    /// Whether a deflate is running right now (for tests).
    public var isCompressing: Bool {
        self.contexts.withLockedValue { $0.deflaterInUse }
    }
}
