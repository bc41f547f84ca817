import NIOCore
import TetherCompression
import TetherSession
import TetherWire

/// One stream, on its connection's event loop: the stream object (spec §6). Relays splice sockets
/// into it; ``TetherStream``, its async face, adds nothing but suspension. Every octet takes the
/// same path through it. On the way out: the policy filter (an edge's METADATA streams,
/// spec/POLICY.md §5), then compression (spec §9.3). On the way in: inflation within the bomb
/// limits (spec §9.4), then the hub's re-check (spec/POLICY.md §7). ``read()`` returns plain
/// octets and message ends; ``write(_:endMessage:)`` takes plain octets.
///
/// Credit goes back to the peer only when the reader says it has taken a read, with
/// ``consumed(_:)`` (spec §7.2): a relay calls it when its backend write completed. Writes are
/// taken while the stream's send buffer — octets queued to send, and written octets not yet
/// compressed — is at most half full (``isWritable``), so it never holds much more than
/// ``SessionConfiguration/sendBufferLimit``.
///
/// `@unchecked Sendable`: it may be passed between threads (in futures, in ``TetherStream``), but
/// its state is only touched on ``eventLoop`` — every entry point checks that.
public final class TetherStreamHandle: @unchecked Sendable {
    public let id: StreamID
    public let streamClass: StreamClass
    public let service: String
    public let metadata: OpenMetadata
    /// The algorithm the stream may be compressed with (spec §9.2); ``read()`` always returns
    /// inflated octets.
    public let compression: CompressionAlgorithm
    public let eventLoop: any EventLoop
    /// The connection the stream belongs to: the peer's verified identity, its certificate and
    /// address, and a way to open more streams.
    public let connection: TetherConnection

    /// The handler that runs the session; nil once the stream can no longer reach it.
    var owner: TetherConnectionHandler?
    let sendBufferLimit: Int
    /// The stream's rule and filter when the connection has a policy (spec/POLICY.md §7).
    package let policy: StreamPolicy?
    /// This side's compressor, when it compresses the stream (spec §9.2).
    private let outbound: OutboundCompression?
    /// The decompressor, when the stream has an algorithm.
    private let inflation: InboundInflation?
    private let compressionConfiguration: CompressionConfiguration

    /// Frames as they arrived, and the pieces ``read()`` returns.
    private var arrived = CircularBuffer<Arrival>(initialCapacity: 0)
    private var ready = CircularBuffer<StreamRead>(initialCapacity: 0)
    private var readWaiter: EventLoopPromise<Void>?
    private var writeWaiters = CircularBuffer<PendingWrite>(initialCapacity: 0)
    private var finishPromise: EventLoopPromise<Void>?
    private var flushTimer: Scheduled<Void>?
    /// The peer's FIN arrived (spec §6.4).
    public private(set) var receiveEnded = false
    /// This side asked for FIN or reset the stream.
    public private(set) var sendClosed = false
    /// Why the stream ended abruptly, if it did.
    public private(set) var failure: TetherError?
    /// The peer's OPENED arrived (a stream this side opened), or this side sent it (spec §5.8).
    public private(set) var isAcknowledged = false
    private var acknowledgement: EventLoopPromise<Void>?

    /// One piece of what the peer sent, plain.
    public struct StreamRead: Sendable {
        public var bytes: ByteBuffer
        /// The last octet ends a message (END_MSG).
        public var endsMessage: Bool
        /// The octets this took on the wire: what to pass to ``TetherStreamHandle/consumed(_:)``
        /// once the reader has taken it (a compressed frame took fewer than it reads as).
        public var wireOctets: Int
    }

    private struct Arrival {
        var bytes: ByteBuffer
        var flags: DataFrame.Flags
    }

    private struct PendingWrite {
        var bytes: ByteBuffer
        var endMessage: Bool
        var promise: EventLoopPromise<Void>
    }

    init(
        id: StreamID, streamClass: StreamClass, service: String, metadata: OpenMetadata,
        compression: CompressionAlgorithm, compressesOutbound: Bool, maxCompressedUnit: Int,
        compressionConfiguration: CompressionConfiguration, policy: StreamPolicy?,
        owner: TetherConnectionHandler, connection: TetherConnection, sendBufferLimit: Int
    ) {
        self.id = id
        self.streamClass = streamClass
        self.service = service
        self.metadata = metadata
        self.compression = compression
        self.owner = owner
        self.connection = connection
        self.eventLoop = connection.eventLoop
        self.sendBufferLimit = sendBufferLimit
        self.policy = policy
        self.compressionConfiguration = compressionConfiguration
        self.outbound =
            compressesOutbound
            ? OutboundCompression(configuration: compressionConfiguration, maxUnit: maxCompressedUnit) : nil
        self.inflation = compression == .none ? nil : InboundInflation(configuration: compressionConfiguration)
    }

    // MARK: Reading

    /// The next piece, or nil when none is ready (see ``isReadEnded`` and ``waitForReadable()``).
    /// A COMPRESSED frame is inflated here, as the reader takes it, into at most 64 KiB; one that
    /// breaks a limit ends the stream with COMPRESSION_ERROR and ``failure`` says so. On a hub's
    /// METADATA stream the pieces are whole messages that passed the re-check.
    public func read() -> StreamRead? {
        self.eventLoop.preconditionInEventLoop()
        while self.ready.isEmpty, self.failure == nil, let arrival = self.arrived.popFirst() {
            self.take(arrival)
        }
        if self.ready.isEmpty, self.receiveEnded, self.arrived.isEmpty, let policy = self.inboundFilter {
            policy.endedInsideMessage()  // a message cut off by FIN is dropped, and audited, once
        }
        return self.ready.popFirst()
    }

    private var inboundFilter: StreamPolicy? { self.policy.flatMap { $0.filtersInbound ? $0 : nil } }

    /// Turns one arrival into what the reader gets.
    private func take(_ arrival: Arrival) {
        var bytes = arrival.bytes
        let wire = bytes.readableBytes
        let endsMessage = arrival.flags.contains(.endMessage)
        if arrival.flags.contains(.compressed), let inflation = self.inflation {
            do {
                bytes = try inflation.inflate(bytes, resetContext: arrival.flags.contains(.resetContext), now: .now())
            } catch {
                self.failStream(.compressionError, TetherError(.compression, errorCode: .compressionError, "\(error)"))
                return
            }
        }
        guard let filter = self.inboundFilter else {
            self.ready.append(StreamRead(bytes: bytes, endsMessage: endsMessage, wireOctets: wire))
            return
        }
        // The re-check holds at most one message and takes what it gathers: credit goes back now.
        self.consumed(wire)
        switch filter.filter(bytes, endMessage: endsMessage) {
        case .incomplete, .dropped: break  // a drop is counted and audited; the stream goes on
        case .message(let message): self.ready.append(StreamRead(bytes: message, endsMessage: true, wireOctets: 0))
        }
    }

    /// Octets received and not yet read (as they arrived, or as they will be read).
    public var bufferedInboundOctets: Int {
        self.eventLoop.preconditionInEventLoop()
        return self.arrived.reduce(0) { $0 + $1.bytes.readableBytes } + self.ready.reduce(0) { $0 + $1.bytes.readableBytes }
    }

    /// Whether nothing more will be read: the peer finished and everything was read, or the stream failed.
    public var isReadEnded: Bool {
        (self.receiveEnded && self.arrived.isEmpty && self.ready.isEmpty) || self.failure != nil
    }

    /// Called on the event loop each time data arrives, the peer finishes or the stream fails —
    /// an allocation-free alternative to ``waitForReadable()`` for relays that read as long as the
    /// stream lives. Set it before data is expected; it is called once per read batch.
    public var onReadable: (() -> Void)? {
        get {
            self.eventLoop.preconditionInEventLoop()
            return self._onReadable
        }
        set {
            self.eventLoop.preconditionInEventLoop()
            self._onReadable = newValue
        }
    }
    private var _onReadable: (() -> Void)?
    /// Whether the connection already listed this stream to be woken at the end of the read batch.
    var wakeScheduled = false

    /// Called on the event loop when the send buffer fell to half or below after it was fuller:
    /// a relay reads its socket again (``isWritable`` says whether a write is taken now).
    public var onWritable: (() -> Void)? {
        get {
            self.eventLoop.preconditionInEventLoop()
            return self._onWritable
        }
        set {
            self.eventLoop.preconditionInEventLoop()
            self._onWritable = newValue
        }
    }
    private var _onWritable: (() -> Void)?

    /// Completes when something arrived, the peer finished, or the stream failed.
    public func waitForReadable() -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if !self.arrived.isEmpty || !self.ready.isEmpty || self.receiveEnded || self.failure != nil {
            return self.eventLoop.makeSucceededVoidFuture()
        }
        if let waiter = self.readWaiter { return waiter.futureResult }
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.readWaiter = promise
        return promise.futureResult
    }

    /// The reader took `wireOctets` (from ``StreamRead/wireOctets``): credit goes back (spec §7.2).
    public func consumed(_ wireOctets: Int) {
        self.eventLoop.preconditionInEventLoop()
        guard wireOctets > 0 else { return }
        self.owner?.streamConsumed(self.id, octets: wireOctets)
    }

    // MARK: Writing

    /// Octets this side holds to send: queued in the session, and written but not yet compressed.
    package var bufferedOutboundOctets: Int {
        (self.owner?.bufferedOctets(self.id) ?? 0) + (self.outbound?.bufferedOctets ?? 0)
    }

    /// Whether a write of up to half the send buffer is taken now.
    public var isWritable: Bool {
        self.eventLoop.preconditionInEventLoop()
        guard self.owner != nil, self.failure == nil, !self.sendClosed else { return true }  // writes fail fast
        return self.hasRoom
    }

    /// Room for more (spec §7.2): the session's queue for the stream and the compressor's octets
    /// are each at most half the send buffer. Each is held to its own mark because each says when
    /// it drains below it — the session through ``becameWritable()`` when its queue crosses the
    /// mark, the compressor here when a flush or a deflated unit moves its octets on. Their sum
    /// could fall below one mark with neither crossing its own, and nothing would say so: a splice
    /// waiting for ``onWritable`` then waited for good.
    private var hasRoom: Bool {
        let half = self.sendBufferLimit / 2
        return (self.owner?.bufferedOctets(self.id) ?? 0) <= half && (self.outbound?.bufferedOctets ?? 0) <= half
    }

    /// Writes `bytes`; the future completes when all of it is in the send buffer. Writes are taken
    /// in order; a large write is taken in pieces as the buffer drains (spec §7.2). On a
    /// compressed stream they are batched and deflated — units of 4 KiB and more off the event
    /// loop, when the connection has somewhere to run them (``CompressionConfiguration/offload``).
    ///
    /// On an edge's METADATA stream the policy gathers each message and sends it filtered when
    /// `endMessage` completes it; a message it drops fails this write with
    /// ``TetherError/Code/policyDenied`` and the stream carries on (spec/POLICY.md §5).
    public func write(_ bytes: ByteBuffer, endMessage: Bool = false) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        if self.sendClosed { return self.eventLoop.makeFailedFuture(TetherError(.streamClosed, "stream already finished")) }
        guard let policy = self.policy, policy.filtersOutbound else { return self.enqueue(bytes, endMessage: endMessage) }
        switch policy.filter(bytes, endMessage: endMessage) {
        case .incomplete: return self.eventLoop.makeSucceededVoidFuture()
        case .message(let message): return self.enqueue(message, endMessage: true)
        case .dropped(let error): return self.eventLoop.makeFailedFuture(error)
        }
    }

    private func enqueue(_ bytes: ByteBuffer, endMessage: Bool) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.writeWaiters.append(PendingWrite(bytes: bytes, endMessage: endMessage, promise: promise))
        self.pumpWrites()
        return promise.futureResult
    }

    /// Sends what a compressed stream has batched now (spec §9.3); nothing to do on others.
    public func flush() {
        self.eventLoop.preconditionInEventLoop()
        guard let outbound = self.outbound, self.failure == nil else { return }
        outbound.requestFlush()
        self.pumpCompression()
    }

    /// Half-closes after everything written so far (spec §6.4); the future completes when the FIN
    /// is queued behind it.
    public func finish() -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        if let promise = self.finishPromise { return promise.futureResult }
        guard !self.sendClosed else { return self.eventLoop.makeSucceededVoidFuture() }
        if let policy = self.policy, policy.filtersOutbound { policy.endedInsideMessage() }
        self.sendClosed = true
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.finishPromise = promise
        self.outbound?.requestFlush()
        self.pumpCompression()
        self.finishIfDrained()
        return promise.futureResult
    }

    // MARK: Acknowledgement (spec §5.8)

    /// Succeeds when the peer acknowledges this stream, which this side opened, with OPENED: it
    /// accepted the stream and reached what it names (a relay: connected its target). Fails when the
    /// stream ends first — refused, reset, or closed without it. Only a peer whose SETTINGS
    /// announced `OPEN_ACK` sends OPENED (``TetherConnection/ready()`` returns those settings).
    public func acknowledged() -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if self.isAcknowledged { return self.eventLoop.makeSucceededVoidFuture() }
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        if self.owner == nil { return self.eventLoop.makeFailedFuture(TetherError(.streamClosed, "stream closed")) }
        if let promise = self.acknowledgement { return promise.futureResult }
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.acknowledgement = promise
        return promise.futureResult
    }

    /// Tells the peer, which opened this stream, that this side accepted it and reached what it
    /// names (OPENED, spec §5.8): a relay calls it once its target is connected. Once; streams
    /// taken from ``TetherConnection/inboundStreams`` are acknowledged as they are taken.
    public func acknowledge() {
        self.eventLoop.preconditionInEventLoop()
        guard !self.isAcknowledged, self.failure == nil else { return }
        self.isAcknowledged = true
        self.owner?.streamAcknowledge(self.id)
    }

    /// The peer's OPENED arrived.
    func acknowledgedByPeer() {
        self.isAcknowledged = true
        self.acknowledgement?.succeed()
        self.acknowledgement = nil
    }

    /// Ends the stream abruptly in both directions (spec §6.5).
    public func reset(_ code: ErrorCode = .cancel) {
        self.eventLoop.preconditionInEventLoop()
        guard self.failure == nil else { return }
        self.owner?.streamReset(self.id, code: code)
        self.fail(TetherError(.streamReset, errorCode: code, "reset locally with \(code.name)"))
    }

    /// Refuses a stream the peer opened with RESET `code` (spec §6.2). `UNKNOWN_SERVICE` and
    /// `POLICY_DENIED` refuse what the peer asked for and count toward its reset rate (spec §12):
    /// a peer that makes us refuse stream after stream is cut off with ENHANCE_YOUR_CALM. Refusals
    /// for our own state — `REFUSED_STREAM` (draining, over a local limit), `CONNECT_ERROR` (the
    /// backend is down) — never count against the peer.
    public func refuse(_ code: ErrorCode = .refusedStream) {
        self.eventLoop.preconditionInEventLoop()
        guard self.failure == nil else { return }
        self.owner?.streamRefuse(self.id, code: code)
        self.fail(TetherError(.streamReset, errorCode: code, "refused with \(code.name)"))
    }

    /// A stream error the peer caused (spec §9.4, §12): RESET with `code`, counted toward the
    /// peer's reset rate; `error` is what this side's reader and writers see.
    private func failStream(_ code: ErrorCode, _ error: TetherError) {
        guard self.failure == nil else { return }
        self.owner?.streamError(self.id, code: code)
        self.fail(error)
    }

    /// Takes as many queued writes as fit the send buffer, through compression when the stream
    /// compresses.
    private func pumpWrites() {
        guard let owner = self.owner else { return }
        let half = self.sendBufferLimit / 2
        while self.failure == nil, var pending = self.writeWaiters.first, self.hasRoom {
            let chunk = pending.bytes.readSlice(length: min(max(1, half), pending.bytes.readableBytes))!
            let last = pending.bytes.readableBytes == 0
            self.policy?.sent(chunk.readableBytes)
            if let outbound = self.outbound {
                outbound.append(chunk, endMessage: last && pending.endMessage)
                self.pumpCompression()
            } else {
                self.send(chunk, endMessage: last && pending.endMessage, compression: [], to: owner)
            }
            guard self.failure == nil else { return }  // the write failed every waiter
            if last {
                self.writeWaiters.removeFirst()
                pending.promise.succeed()
            } else {
                self.writeWaiters[self.writeWaiters.startIndex] = pending
            }
        }
        self.finishIfDrained()
    }

    /// Hands octets to the session; a refusal fails the stream.
    private func send(_ bytes: ByteBuffer, endMessage: Bool, compression: DataFrame.Flags, to owner: TetherConnectionHandler) {
        do {
            try owner.streamWrite(self.id, bytes, endMessage: endMessage, compression: compression)
        } catch {
            self.fail(error as? TetherError ?? TetherError(.streamClosed, "\(error)"))
        }
    }

    /// Moves what the compressor has ready into the session, in order: raw pieces and units
    /// deflated here; a large unit goes to ``CompressionConfiguration/offload`` and the rest waits
    /// for it to come back (``deflated(_:_:)``).
    private func pumpCompression() {
        guard let outbound = self.outbound, let owner = self.owner else { return }
        while self.failure == nil {
            let step: OutboundCompression.Step
            do {
                step = try outbound.next(now: .now())
            } catch {
                return self.compressionFailed(error)
            }
            switch step {
            case .idle:
                if outbound.waitsForBatch { self.armFlushTimer() }
                return
            case .raw(let bytes, let endsMessage):
                self.send(bytes, endMessage: endsMessage, compression: [], to: owner)
            case .deflate(let job):
                guard let offload = self.compressionConfiguration.offload,
                    job.inputOctets >= self.compressionConfiguration.offloadAbove
                else {
                    self.emit(job, job.run())
                    continue
                }
                let eventLoop = self.eventLoop
                offload {
                    let result = job.run()
                    eventLoop.execute { self.deflated(job, result) }
                }
                return
            }
        }
    }

    /// A unit deflated off the event loop is back: it goes out, and what waited behind it follows.
    private func deflated(_ job: DeflateJob, _ result: Result<ByteBuffer, CompressionError>) {
        guard self.failure == nil else { return }
        self.emit(job, result)
        self.pumpCompression()
        self.pumpWrites()
        self.becameWritable()
    }

    private func emit(_ job: DeflateJob, _ result: Result<ByteBuffer, CompressionError>) {
        guard let outbound = self.outbound, let owner = self.owner else { return }
        switch result {
        case .success(let deflated):
            let unit = outbound.finished(job, deflated, now: .now())
            var flags: DataFrame.Flags = [.compressed]
            if job.resetContext { flags.insert(.resetContext) }
            self.send(unit, endMessage: job.endsMessage, compression: flags, to: owner)
        case .failure(let error):
            self.compressionFailed(error)
        }
    }

    private func compressionFailed(_ error: CompressionError) {
        self.outbound?.failed()
        guard self.failure == nil else { return }
        self.owner?.streamReset(self.id, code: .compressionError)
        self.fail(TetherError(.compression, errorCode: .compressionError, "\(error)"))
    }

    /// Octets that wait for a batch to fill go after `flushDelay` anyway (spec §9.3).
    private func armFlushTimer() {
        guard self.flushTimer == nil else { return }
        self.flushTimer = self.eventLoop.assumeIsolated().scheduleTask(in: self.compressionConfiguration.flushDelay) {
            self.flushTimer = nil
            self.flush()
            self.becameWritable()  // the compressor's octets moved on: room, perhaps
        }
    }

    /// Queues the FIN once every write before it has gone into the session.
    private func finishIfDrained() {
        guard let promise = self.finishPromise, self.writeWaiters.isEmpty, self.outbound?.isEmpty ?? true else { return }
        self.finishPromise = nil
        self.flushTimer?.cancel()
        self.flushTimer = nil
        self.owner?.streamFinish(self.id)
        promise.succeed()
    }

    /// Writes OPEN-negotiated compressed octets as they are, bypassing the compressor: one unit,
    /// whole, in one COMPRESSED frame (spec §9.3). For tests of the receiver's limits.
    package func writeCompressedUnit(_ unit: ByteBuffer, endMessage: Bool, resetContext: Bool) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        guard let owner = self.owner else { return self.eventLoop.makeFailedFuture(TetherError(.streamClosed, "stream closed")) }
        var flags: DataFrame.Flags = [.compressed]
        if resetContext { flags.insert(.resetContext) }
        self.send(unit, endMessage: endMessage, compression: flags, to: owner)
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        guard !self.hasRoom else { return self.eventLoop.makeSucceededVoidFuture() }
        // Wait for room, as a write would.
        return self.enqueue(ByteBuffer(), endMessage: false)
    }

    // MARK: Events from the connection

    /// Queues what arrived. The reader is woken by ``wakeReader()`` once the whole read batch is
    /// delivered, so it takes several frames per wakeup.
    func deliver(_ payload: ByteBuffer, flags: DataFrame.Flags) {
        self.policy?.received(payload.readableBytes)
        if payload.readableBytes > 0 || flags.contains(.endMessage) {
            self.arrived.append(Arrival(bytes: payload, flags: flags))
        }
        if flags.contains(.fin) { self.receiveEnded = true }
    }

    /// The session has room for this stream again.
    func becameWritable() {
        self.pumpWrites()
        if self.isWritable { self._onWritable?() }
    }

    /// Frees compression contexts that idled (spec §9.3); never one in use, nor a decompressor
    /// that frames waiting to be read still need.
    func freeIdleContexts(now: NIODeadline) {
        self.outbound?.freeIdle(now: now)
        self.inflation?.freeIdle(now: now, framesWaiting: self.arrived.contains { $0.flags.contains(.compressed) })
    }

    /// Whether the stream compresses or inflates at all (the connection sweeps those).
    var usesCompression: Bool { self.outbound != nil || self.inflation != nil }

    /// Whether a compression context is allocated (for tests and memory accounting).
    package var holdsCompressionContexts: Bool {
        (self.outbound?.holdsContext ?? false) || (self.inflation?.holdsContext ?? false)
    }

    /// The stream ended abruptly or the connection closed: buffered data is dropped (the session
    /// already released its credit), waiters fail.
    func fail(_ error: TetherError) {
        guard self.failure == nil else { return }
        self.failure = error
        self.policy?.ended(id: self.id, how: "\(error)")
        self.arrived.removeAll()
        self.ready.removeAll()
        self.owner = nil
        self.flushTimer?.cancel()
        self.flushTimer = nil
        self.outbound?.failed()
        self.wakeReader()
        self._onReadable = nil  // they may hold the handle: break the cycle
        let onWritable = self._onWritable
        self._onWritable = nil
        onWritable?()
        while let pending = self.writeWaiters.popFirst() { pending.promise.fail(error) }
        self.finishPromise?.fail(error)
        self.finishPromise = nil
        self.acknowledgement?.fail(error)
        self.acknowledgement = nil
    }

    /// The session closed the stream normally; reads of what is buffered continue.
    func detach() {
        self.policy?.ended(id: self.id, how: "finished")
        // Keep `owner` so `consumed` still returns connection credit for octets read later.
        while let pending = self.writeWaiters.popFirst() {
            pending.promise.fail(TetherError(.streamClosed, "stream closed"))
        }
        self.acknowledgement?.fail(TetherError(.streamClosed, "stream closed without OPENED"))
        self.acknowledgement = nil
    }

    func wakeReader() {
        self.wakeScheduled = false
        if let waiter = self.readWaiter {
            self.readWaiter = nil
            waiter.succeed()
        }
        self._onReadable?()
    }
}
