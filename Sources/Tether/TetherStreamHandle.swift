import NIOCore
import TetherCompression
import TetherSession
import TetherWire

/// One stream, on its connection's event loop: the object relays splice sockets into, and the
/// object ``TetherStream`` (the async face) wraps. There is one multiplexing path: both faces call
/// the same methods here. Every method must be called on ``eventLoop``.
///
/// Reading returns chunks as they arrived; credit goes back to the peer only when the reader says
/// it has taken them with ``consumed(_:)`` (spec §7.2) — a relay calls it when its backend write
/// completed. Writing accepts at most half the send buffer per call and only while it fits
/// (``isWritable``), so a stream never holds more than ``SessionConfiguration/sendBufferLimit`` unsent.
///
/// `@unchecked Sendable`: it may be passed between threads (in futures, in ``TetherStream``), but its
/// state is only touched on ``eventLoop`` — every entry point checks that.
public final class TetherStreamHandle: @unchecked Sendable {
    public let id: StreamID
    public let streamClass: StreamClass
    public let service: String
    public let metadata: OpenMetadata
    public let compression: CompressionAlgorithm
    public let eventLoop: any EventLoop
    /// The stream's compression state, when it has an algorithm (spec §9).
    public let codec: StreamCodec?
    /// Whether this side sends compressed units on the stream (spec §9.2), and how large one may be.
    public let compressesOutbound: Bool
    public let maxCompressedUnit: Int
    /// The stream's rule and filter when the connection has a policy (spec/POLICY.md §7).
    public let policy: StreamPolicy?

    /// The handler that runs the session; nil once the stream can no longer reach it.
    var owner: TetherConnectionHandler?
    let sendBufferLimit: Int

    private var inbound = CircularBuffer<StreamRead>(initialCapacity: 0)
    private var readWaiter: EventLoopPromise<Void>?
    private var writeWaiters = CircularBuffer<PendingWrite>(initialCapacity: 0)
    /// The peer's FIN arrived (spec §6.4).
    public private(set) var receiveEnded = false
    /// This side asked for FIN or reset the stream.
    public private(set) var sendClosed = false
    /// Why the stream ended abruptly, if it did.
    public private(set) var failure: TetherError?

    /// One piece of what the peer sent.
    public struct StreamRead: Sendable {
        public var bytes: ByteBuffer
        /// The last octet ends a message (END_MSG).
        public var endsMessage: Bool
        /// Octets this took on the wire: what to pass to ``TetherStreamHandle/consumed(_:)``.
        public var wireOctets: Int
        /// COMPRESSED and RESET_CONTEXT as they arrived: `bytes` is then still compressed (spec §9.3).
        public var compression: DataFrame.Flags
    }

    private struct PendingWrite {
        var bytes: ByteBuffer
        var endMessage: Bool
        /// Non-empty for a compressed unit, which goes whole.
        var compression: DataFrame.Flags
        var promise: EventLoopPromise<Void>
    }

    init(
        id: StreamID, streamClass: StreamClass, service: String, metadata: OpenMetadata,
        compression: CompressionAlgorithm, owner: TetherConnectionHandler, eventLoop: any EventLoop,
        sendBufferLimit: Int, codec: StreamCodec?, compressesOutbound: Bool, maxCompressedUnit: Int,
        policy: StreamPolicy?
    ) {
        self.id = id
        self.streamClass = streamClass
        self.service = service
        self.metadata = metadata
        self.compression = compression
        self.owner = owner
        self.eventLoop = eventLoop
        self.sendBufferLimit = sendBufferLimit
        self.codec = codec
        self.compressesOutbound = compressesOutbound
        self.maxCompressedUnit = maxCompressedUnit
        self.policy = policy
    }

    // MARK: Reading

    /// The next chunk, or nil when none is buffered (see ``isReadEnded`` and ``waitForReadable()``).
    public func read() -> StreamRead? {
        self.eventLoop.preconditionInEventLoop()
        return self.inbound.popFirst()
    }

    /// Octets received and not yet read.
    public var bufferedInboundOctets: Int {
        self.eventLoop.preconditionInEventLoop()
        return self.inbound.reduce(0) { $0 + $1.bytes.readableBytes }
    }

    /// Whether nothing more will be read: the peer finished and everything was read, or the stream failed.
    public var isReadEnded: Bool {
        (self.receiveEnded && self.inbound.isEmpty) || self.failure != nil
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

    /// Completes when a chunk is buffered, the peer finished, or the stream failed.
    public func waitForReadable() -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if !self.inbound.isEmpty || self.receiveEnded || self.failure != nil {
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
        self.owner?.streamConsumed(self.id, octets: wireOctets)
    }

    // MARK: Writing

    /// Whether a write of up to half the send buffer is taken now.
    public var isWritable: Bool {
        guard let owner = self.owner, self.failure == nil, !self.sendClosed else { return true }  // writes fail fast
        return owner.bufferedOctets(self.id) <= self.sendBufferLimit / 2
    }

    /// Writes `bytes`; the future completes when all of it is in the send buffer. Writes are taken
    /// in order; a large write is taken in pieces as the buffer drains (spec §7.2).
    ///
    /// On an edge's METADATA stream the policy gathers each message and sends it filtered when
    /// `endMessage` completes it; a message it drops fails this write with
    /// ``TetherError/Code/policyDenied`` and the stream carries on (spec/POLICY.md §5).
    public func write(_ bytes: ByteBuffer, endMessage: Bool = false) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        guard let policy = self.policy, policy.filtersOutbound, self.failure == nil, !self.sendClosed else {
            return self.writeFiltered(bytes, endMessage: endMessage)
        }
        switch policy.filter(bytes, endMessage: endMessage) {
        case .incomplete: return self.eventLoop.makeSucceededVoidFuture()
        case .message(let message): return self.writeFiltered(message, endMessage: true)
        case .dropped(let error): return self.eventLoop.makeFailedFuture(error)
        }
    }

    /// Writes bytes that already passed the policy.
    func writeFiltered(_ bytes: ByteBuffer, endMessage: Bool) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        if self.sendClosed { return self.eventLoop.makeFailedFuture(TetherError(.streamClosed, "stream already finished")) }
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.writeWaiters.append(PendingWrite(bytes: bytes, endMessage: endMessage, compression: [], promise: promise))
        self.pumpWrites()
        return promise.futureResult
    }

    /// Writes one compressed unit, whole, in order with other writes (spec §9.3). The unit was
    /// made by ``codec`` and is at most ``maxCompressedUnit`` octets.
    public func writeCompressedUnit(_ unit: ByteBuffer, endMessage: Bool, resetContext: Bool) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        if self.sendClosed { return self.eventLoop.makeFailedFuture(TetherError(.streamClosed, "stream already finished")) }
        var flags: DataFrame.Flags = [.compressed]
        if resetContext { flags.insert(.resetContext) }
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.writeWaiters.append(PendingWrite(bytes: unit, endMessage: endMessage, compression: flags, promise: promise))
        self.pumpWrites()
        return promise.futureResult
    }

    /// Half-closes after everything written so far (spec §6.4).
    public func finish() -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        if let failure = self.failure { return self.eventLoop.makeFailedFuture(failure) }
        guard !self.sendClosed else { return self.eventLoop.makeSucceededVoidFuture() }
        if let policy = self.policy, policy.filtersOutbound { policy.endedInsideMessage() }
        // FIN follows queued writes: wait for them to be taken first.
        let done = self.writeWaiters.last?.promise.futureResult ?? self.eventLoop.makeSucceededVoidFuture()
        self.sendClosed = true
        return done.flatMapThrowing { [self] in
            self.owner?.streamFinish(self.id)
        }
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

    /// Takes as many queued writes as fit the send buffer.
    private func pumpWrites() {
        guard let owner = self.owner else { return }
        let piece = max(1, self.sendBufferLimit / 2)
        while var pending = self.writeWaiters.first {
            guard owner.bufferedOctets(self.id) <= self.sendBufferLimit / 2 else { return }
            let length = pending.compression.isEmpty ? min(piece, pending.bytes.readableBytes) : pending.bytes.readableBytes
            let chunk = pending.bytes.readSlice(length: length)!
            let last = pending.bytes.readableBytes == 0
            self.policy?.sent(chunk.readableBytes)
            do {
                try owner.streamWrite(
                    self.id, chunk, endMessage: last && pending.endMessage, compression: pending.compression)
            } catch {
                self.fail(error as? TetherError ?? TetherError(.streamClosed, "\(error)"))
                return
            }
            if last {
                self.writeWaiters.removeFirst()
                pending.promise.succeed()
            } else {
                self.writeWaiters[self.writeWaiters.startIndex] = pending
            }
        }
    }

    // MARK: Events from the connection

    /// Buffers what arrived. The reader is woken by ``wakeReader()`` once the whole read batch is
    /// delivered, so it takes several frames per wakeup.
    func deliver(_ payload: ByteBuffer, flags: DataFrame.Flags) {
        self.policy?.received(payload.readableBytes)
        if flags.contains(.compressed) { self.codec?.noteCompressedFrame() }
        if payload.readableBytes > 0 || flags.contains(.endMessage) {
            self.inbound.append(
                StreamRead(
                    bytes: payload, endsMessage: flags.contains(.endMessage), wireOctets: payload.readableBytes,
                    compression: flags.intersection([.compressed, .resetContext])))
        }
        if flags.contains(.fin) { self.receiveEnded = true }
    }

    func becameWritable() {
        self.pumpWrites()
    }

    /// The stream ended abruptly or the connection closed: buffered data is dropped (the session
    /// already released its credit), waiters fail.
    func fail(_ error: TetherError) {
        guard self.failure == nil else { return }
        self.failure = error
        self.policy?.ended(id: self.id, how: "\(error)")
        self.inbound.removeAll()
        self.owner = nil
        self.wakeReader()
        self._onReadable = nil  // it may hold the handle: break the cycle
        while let pending = self.writeWaiters.popFirst() { pending.promise.fail(error) }
    }

    /// The session closed the stream normally; reads of what is buffered continue.
    func detach() {
        self.policy?.ended(id: self.id, how: "finished")
        // Keep `owner` so `consumed` still returns connection credit for octets read later.
        while let pending = self.writeWaiters.popFirst() {
            pending.promise.fail(TetherError(.streamClosed, "stream closed"))
        }
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
