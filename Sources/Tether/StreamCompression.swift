import NIOCore
import TetherCompression
import TetherWire

/// How a connection's streams compress (spec §9): contexts, batching, the raw fallback, bomb
/// limits, and where large units are deflated.
public struct CompressionConfiguration: Sendable {
    public var deflate = DeflateParameters()
    public var inflate = InflateLimits()
    /// Written octets are compressed once this many have gathered, at a message end, on a flush,
    /// or `flushDelay` after the first of them (spec §9.3: each sync flush covers a few KiB).
    public var batch = 16_384
    public var flushDelay: TimeAmount = .milliseconds(10)
    /// A compressor unused this long is freed; the next unit starts a new context with
    /// RESET_CONTEXT (spec §9.3: 20 s).
    public var idleCompressor: TimeAmount = .seconds(20)
    /// A decompressor unused this long, with no COMPRESSED frame waiting to be read, is freed
    /// (spec §9.3: 60 s).
    public var idleDecompressor: TimeAmount = .seconds(60)
    /// How often the connection looks for idle contexts while streams compress.
    public var sweepInterval: TimeAmount = .seconds(10)
    /// Units that save less than this fraction switch the stream to raw frames for `rawFor`
    /// octets; then compression is tried again (spec §9.2: incompressible data goes raw).
    public var minimumSaving = 0.1
    public var rawFor = 1 << 20
    /// Where units of at least `offloadAbove` octets are deflated. Nil (the default): on the
    /// event loop — a unit is at most `batch` octets, a bounded moment (≈ 0.2 ms at level 6 here:
    /// `tether bench compression` framed log text at 83 MB/s).
    /// A thread pool keeps even that off the loop, at the cost of a hand-off per unit: measured
    /// with `tether demo` on 2 cores, NIO's pool cut LOGS from ≈ 415 to ≈ 40 MiB/s and raised the
    /// command round trip's p99 from ≈ 6 ms to ≈ 0.4–1.3 s, so it is opt-in.
    public var offload: BlockingWorkRunner?
    public var offloadAbove = 4_096

    public init() {}
}

/// Runs a piece of blocking work somewhere other than an event loop, and calls it exactly once.
public typealias BlockingWorkRunner = @Sendable (_ work: @escaping @Sendable () -> Void) -> Void

/// The writer's side of one stream's compression (spec §9.2, §9.3), confined to the stream's
/// event loop: it gathers what the application writes into batches, cuts them into units that
/// each fit one COMPRESSED frame, and says what to do next — send octets raw, send a unit, or
/// deflate one. Only one unit is deflated at a time, whether here or on another thread, so the
/// zlib context is never used by two threads at once and units leave in the order they were made.
package final class OutboundCompression {
    /// What the stream does next with what was written.
    package enum Step {
        /// Nothing now: the batch is not full, or a unit is being deflated.
        case idle
        /// Octets to send raw (a stream whose data did not compress, spec §9.2).
        case raw(ByteBuffer, endsMessage: Bool)
        /// A unit to deflate; hand it back with ``finished(_:_:now:)``.
        case deflate(DeflateJob)
    }

    let configuration: CompressionConfiguration
    /// The largest compressed unit the peer can take in one frame (``Session/maxCompressedUnit(_:)``).
    let maxUnit: Int
    /// Written octets not yet compressed, as they were written (a unit is deflated from its pieces,
    /// never copied together), and whether their last one ends a message.
    private var pending = CircularBuffer<ByteBuffer>(initialCapacity: 0)
    private var pendingOctets = 0
    private var pendingEndsMessage = false
    /// A flush, a message end or the stream's end asked for everything pending to go.
    private var flushRequested = false
    private var deflater: Deflater?
    private var lastCompressed = NIODeadline.uptimeNanoseconds(0)
    /// Octets still to send raw after a poor ratio.
    private var rawBudget = 0
    /// The unit being deflated, while one is.
    private(set) var deflatingOctets = 0

    package init(configuration: CompressionConfiguration, maxUnit: Int) {
        self.configuration = configuration
        self.maxUnit = maxUnit
    }

    /// Written octets waiting here, counted against the stream's send buffer.
    package var bufferedOctets: Int { self.pendingOctets + self.deflatingOctets }

    /// Whether everything written has left (nothing pending, nothing being deflated).
    package var isEmpty: Bool { self.bufferedOctets == 0 }

    /// Whether octets wait for a batch to fill (the caller arms the flush timer).
    package var waitsForBatch: Bool { self.pendingOctets > 0 && !self.flushRequested }

    package func append(_ bytes: ByteBuffer, endMessage: Bool) {
        if bytes.readableBytes > 0 {
            self.pending.append(bytes)
            self.pendingOctets += bytes.readableBytes
        }
        self.pendingEndsMessage = endMessage
        if endMessage && self.pendingOctets > 0 { self.flushRequested = true }
    }

    /// Everything pending goes, whatever the batch size (a flush, the flush timer, FIN).
    package func requestFlush() {
        if self.pendingOctets > 0 { self.flushRequested = true }
    }

    /// Takes `count` pending octets off the front, as the pieces they were written in.
    private func take(_ count: Int) -> [ByteBuffer] {
        var pieces: [ByteBuffer] = []
        var count = count
        while count > 0, var first = self.pending.first {
            if first.readableBytes <= count {
                pieces.append(self.pending.removeFirst())
                count -= first.readableBytes
            } else {
                pieces.append(first.readSlice(length: count)!)
                self.pending[self.pending.startIndex] = first
                count = 0
            }
        }
        self.pendingOctets -= pieces.reduce(0) { $0 + $1.readableBytes }
        return pieces
    }

    /// Units shorter than this are not judged for the raw fallback: their ratio says more about
    /// the sync flush than about the data.
    static let judgedUnit = 1_024

    /// The next thing to do. Unless a flush was asked for, a tail too short to fill a unit waits
    /// for more: a tiny unit costs a frame header and a sync flush, and would be judged
    /// incompressible.
    package func next(now: NIODeadline) throws(CompressionError) -> Step {
        guard self.deflatingOctets == 0, self.pendingOctets > 0 else { return .idle }
        if self.rawBudget > 0 {
            // One piece (or its front) at a time: raw octets go out as they were written.
            let length = min(self.pending.first!.readableBytes, self.rawBudget)
            self.rawBudget -= length
            let bytes = self.take(length)[0]
            return .raw(bytes, endsMessage: self.takeEnd())
        }
        var reset = false
        if self.deflater == nil || now - self.lastCompressed >= self.configuration.idleCompressor {
            // A new context: the receiver learns of it from RESET_CONTEXT (spec §9.3).
            self.deflater = try Deflater(parameters: self.configuration.deflate)
            reset = true
        }
        let fullUnit = self.deflater!.maxInput(forPayload: self.maxUnit)
        guard fullUnit > 0 else { throw CompressionError(.limit, "no room for a compressed unit") }
        let enough = self.configuration.batch >= fullUnit ? fullUnit : self.configuration.batch
        guard self.flushRequested || self.pendingOctets >= enough else { return .idle }
        let input = self.take(min(self.pendingOctets, fullUnit))
        let octets = input.reduce(0) { $0 + $1.readableBytes }
        self.deflatingOctets = octets
        return .deflate(
            DeflateJob(deflater: self.deflater!, input: input, inputOctets: octets, resetContext: reset, endsMessage: self.takeEnd()))
    }

    /// The message end and the flush belong to the last pending octet: taken with it.
    private func takeEnd() -> Bool {
        guard self.pendingOctets == 0 else { return false }
        defer {
            self.pending.removeAll(keepingCapacity: true)
            self.pendingEndsMessage = false
            self.flushRequested = false
        }
        return self.pendingEndsMessage
    }

    /// A unit came back from ``DeflateJob/run()``: judges its ratio (spec §9.2) and returns it.
    package func finished(_ job: DeflateJob, _ unit: ByteBuffer, now: NIODeadline) -> ByteBuffer {
        self.deflatingOctets = 0
        self.lastCompressed = now
        let length = job.inputOctets
        if length >= Self.judgedUnit,
            Double(unit.readableBytes) > Double(length) * (1 - self.configuration.minimumSaving)
        {
            self.rawBudget = self.configuration.rawFor  // incompressible: go raw for a while
        }
        return unit
    }

    /// A deflate failed: the stream is reset with COMPRESSION_ERROR; nothing more is made.
    func failed() {
        self.deflatingOctets = 0
        self.pending.removeAll()
        self.pendingOctets = 0
        self.deflater = nil
    }

    /// Frees the compressor after it idled (spec §9.3); never one in use. Returns whether it did.
    @discardableResult
    func freeIdle(now: NIODeadline) -> Bool {
        guard self.deflater != nil, self.deflatingOctets == 0,
            now - self.lastCompressed >= self.configuration.idleCompressor
        else { return false }
        self.deflater = nil
        return true
    }

    var holdsContext: Bool { self.deflater != nil }
}

/// One unit to deflate, wherever that runs. `@unchecked Sendable`: the zlib context inside is
/// used by one thread at a time — the job's, while ``OutboundCompression`` has it out — and the
/// hand-over to and from that thread orders every access.
package struct DeflateJob: @unchecked Sendable {
    let deflater: Deflater
    /// The unit's octets, in the pieces they were written in.
    package let input: [ByteBuffer]
    package let inputOctets: Int
    package let resetContext: Bool
    package let endsMessage: Bool

    /// The frame's payload: the input deflated and sync-flushed, without `00 00 FF FF`.
    package func run() -> Result<ByteBuffer, CompressionError> {
        var output = ByteBuffer()
        do {
            try self.deflater.compress(self.input, into: &output)
            return .success(output)
        } catch {
            return .failure(error)
        }
    }
}

/// The reader's side of one stream's compression (spec §9.3, §9.4), confined to the stream's
/// event loop: each COMPRESSED frame is inflated when the reader takes it, into bounded output,
/// within the stream's bomb limits. A frame inflates to at most 65,536 octets, so taking one
/// costs the loop a bounded moment.
package final class InboundInflation {
    let configuration: CompressionConfiguration
    private var inflater: Inflater?
    /// The stream's totals from contexts that were replaced or freed (spec §9.4: per stream).
    private var totals = InflateTotals()
    private var lastInflated = NIODeadline.uptimeNanoseconds(0)
    private var everInflated = false

    package init(configuration: CompressionConfiguration) {
        self.configuration = configuration
    }

    /// One COMPRESSED frame's octets. A frame without RESET_CONTEXT after the decompressor was
    /// freed is an error (spec §9.3); so is anything past the limits (spec §9.4).
    package func inflate(_ payload: ByteBuffer, resetContext: Bool, now: NIODeadline) throws(CompressionError) -> ByteBuffer {
        if resetContext || self.inflater == nil {
            guard resetContext || !self.everInflated else {
                throw CompressionError(.invalidData, "a compressed frame after the context was freed, without RESET_CONTEXT")
            }
            self.totals = self.inflater?.totals ?? self.totals
            self.inflater = try Inflater(limits: self.configuration.inflate, totals: self.totals)
        }
        self.everInflated = true
        self.lastInflated = now
        return try self.inflater!.inflate(payload)
    }

    /// Frees the decompressor after it idled (spec §9.3), unless COMPRESSED frames wait to be
    /// read: those need it, however long the reader takes. Returns whether it did.
    @discardableResult
    func freeIdle(now: NIODeadline, framesWaiting: Bool) -> Bool {
        guard self.inflater != nil, !framesWaiting, now - self.lastInflated >= self.configuration.idleDecompressor
        else { return false }
        self.totals = self.inflater!.totals
        self.inflater = nil
        return true
    }

    var holdsContext: Bool { self.inflater != nil }

    /// Octets zlib produced so far in the current context (for tests of the bomb limits).
    var octetsProduced: UInt64 { self.inflater?.octetsProduced ?? 0 }
}
