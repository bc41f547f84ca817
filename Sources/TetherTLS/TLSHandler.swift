import NIOCore

/// A NIO duplex handler that runs TLS on OpenSSL (spec §2.1): ciphertext below, plaintext above.
///
/// - Nothing flows up before the handshake has completed and the peer is authenticated; plaintext
///   written earlier waits. ``handshakeCompleted`` succeeds (on the event loop, before any plaintext
///   is passed up) with what was verified, so a handler added from its callback sees every byte.
/// - Writes between flushes are packed into records of up to 16 KiB. A write that does not fit
///   the current record starts the next one, so a write of whole frames (≤ 16 KiB) never straddles
///   two records. Full records are encrypted at once and go down the pipeline at the end of the
///   write that filled them, so the channel's writability reflects every full record; a large
///   write's records are gathered into buffers of up to 64 KiB (``ByteBufferBIO/batchCapacity``),
///   sized before OpenSSL writes into them, so no buffer grows and none is much larger than its
///   ciphertext.
/// - `close` sends close_notify first; `close(mode: .output)` sends it and keeps reading. A peer's
///   close_notify closes the channel; a transport that ends without it is reported as
///   ``TLSError/Code/truncated``. A record that fails to decrypt ends the connection.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// The largest plaintext of one TLS record.
    public static let recordSize = 16_384

    private enum State {
        case idle
        case handshaking
        case active
        /// We sent close_notify after a half-close; reading continues.
        case outputClosed
        case closed
    }

    private let connection: TLSConnection
    private let handshakePromise: EventLoopPromise<TLSPeer>
    private let handshakeTimeout: TimeAmount
    private var state = State.idle
    private var timeout: Scheduled<Void>?
    private var waitingForHandshake = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 0)
    private var record: ByteBuffer
    /// Writes packed into ``record``, and writes encrypted into the batch not yet passed down.
    private var recordPromises: [EventLoopPromise<Void>] = []
    private var batchPromises: [EventLoopPromise<Void>] = []
    private var closeNotifyReceived = false

    /// Succeeds with the verified peer when the handshake completes; fails with a ``TLSError``.
    public var handshakeCompleted: EventLoopFuture<TLSPeer> { self.handshakePromise.futureResult }

    /// `serverName`, on a client, is the name or IP the server's certificate must match, in
    /// place of the configuration's (one context can dial several hubs).
    public init(context: TLSContext, serverName: String? = nil, eventLoop: any EventLoop) throws(TLSError) {
        let allocator = ByteBufferAllocator()
        self.connection = try context.makeConnection(allocator: allocator, serverName: serverName)
        self.handshakePromise = eventLoop.makePromise()
        self.handshakeTimeout = context.configuration.handshakeTimeout
        self.record = allocator.buffer(capacity: 0)
    }

    // MARK: Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.timeout?.cancel()
        self.failWaiting(ChannelError.ioOnClosedChannel)
        self.handshakePromise.fail(ChannelError.ioOnClosedChannel)  // ignored when already completed
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        self.state = .handshaking
        self.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: self.handshakeTimeout) {
            guard case .handshaking = self.state else { return }
            self.fail(context: context, TLSError(.handshakeTimeout, "no complete handshake within \(self.handshakeTimeout)"))
        }
        self.advanceHandshake(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.timeout?.cancel()
        switch self.state {
        case .handshaking:
            self.handshakePromise.fail(TLSError(.handshakeFailed, "the transport closed during the handshake"))
        case .active, .outputClosed:
            if !self.closeNotifyReceived {
                context.fireErrorCaught(TLSError(.truncated, "the transport closed without close_notify"))
            }
        case .idle, .closed:
            break
        }
        self.state = .closed
        self.failWaiting(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    // MARK: Reading

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.connection.feed(self.unwrapInboundIn(data))
        switch self.state {
        case .handshaking: self.advanceHandshake(context: context)
        case .active, .outputClosed: self.readPlaintext(context: context)
        case .idle, .closed: break
        }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        switch self.connection.handshake() {
        case .pending:
            self.writeCiphertext(context: context, flush: true)
        case .done(let peer):
            self.state = .active
            self.timeout?.cancel()
            self.writeCiphertext(context: context, flush: true)
            while let (bytes, promise) = self.waitingForHandshake.popFirst() {
                self.pack(bytes, promise: promise, context: context)
            }
            self.flushRecord(context: context)
            // Callbacks run now, before any plaintext goes up: they may add the next handler.
            self.handshakePromise.succeed(peer)
            self.readPlaintext(context: context)
        case .failed(let error):
            self.fail(context: context, error)
        }
    }

    /// Plaintext is passed up in buffers of this size: four full records (a power of two, as
    /// `ByteBuffer` allocates, and under glibc's mmap threshold).
    private static let readBatch = 65_536

    private func readPlaintext(context: ChannelHandlerContext) {
        while true {
            var plaintext = context.channel.allocator.buffer(capacity: Self.readBatch)
            let outcome = self.connection.read(into: &plaintext)
            let full = plaintext.writableBytes < Self.recordSize
            if plaintext.readableBytes > 0 { context.fireChannelRead(self.wrapInboundOut(plaintext)) }
            switch outcome {
            case .wantMore where full:
                continue  // stopped for room, not for want of records
            case .wantMore:
                self.writeCiphertext(context: context, flush: true)  // e.g. key updates
                return
            case .closed:
                self.closeNotifyReceived = true
                self.closeOutput(context: context)
                context.close(promise: nil)
                return
            case .failed(let error):
                self.fail(context: context, error)
                return
            }
        }
    }

    // MARK: Writing

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = self.unwrapOutboundIn(data)
        switch self.state {
        case .idle, .handshaking:
            self.waitingForHandshake.append((bytes, promise))
        case .active:
            self.pack(bytes, promise: promise, context: context)
        case .outputClosed, .closed:
            promise?.fail(ChannelError.outputClosed)
        }
    }

    public func flush(context: ChannelHandlerContext) {
        guard case .active = self.state else { return }
        self.flushRecord(context: context)
    }

    /// Adds a write to the current record; a write that does not fit starts the next record.
    private func pack(_ bytes: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if self.record.readableBytes + bytes.readableBytes > Self.recordSize {
            self.encryptRecord(context: context)
        }
        if bytes.readableBytes >= Self.recordSize {
            // Full records of their own, encrypted straight from the caller's buffer.
            var bytes = bytes
            while bytes.readableBytes > 0 {
                let remaining = bytes.readableBytes
                guard self.encrypt(bytes.readSlice(length: min(Self.recordSize, remaining))!, upTo: remaining, context: context)
                else { return }
            }
            if let promise { self.batchPromises.append(promise) }
            self.writeCiphertext(context: context, flush: false)
            return
        }
        var bytes = bytes
        TLSStatistics.Counters.octetsCopied.wrappingAdd(bytes.readableBytes, ordering: .relaxed)
        self.record.writeBuffer(&bytes)
        if let promise { self.recordPromises.append(promise) }
        if self.record.readableBytes == Self.recordSize { self.encryptRecord(context: context) }
    }

    /// Encrypts the packed record and passes it down; its writes complete with that write.
    private func encryptRecord(context: ChannelHandlerContext) {
        if self.record.readableBytes > 0 {
            let encrypted = self.encrypt(self.record, upTo: self.record.readableBytes, context: context)
            self.record.clear()
            guard encrypted else { return }
        }
        self.batchPromises.append(contentsOf: self.recordPromises)
        self.recordPromises.removeAll()
        self.writeCiphertext(context: context, flush: false)
    }

    /// Encrypts one record's plaintext into the current buffer, first passing that buffer down if
    /// the record might not fit it, and sizing a new one for the `upTo` octets the write still has.
    /// False when the connection failed.
    private func encrypt(_ plaintext: ByteBuffer, upTo remaining: Int, context: ChannelHandlerContext) -> Bool {
        if !self.connection.hasRoom(plaintext: plaintext.readableBytes) {
            self.writeCiphertext(context: context, flush: false)
        }
        self.connection.reserve(plaintext: remaining)
        if let error = self.connection.write(plaintext) {
            self.fail(context: context, error)
            return false
        }
        return true
    }

    private func flushRecord(context: ChannelHandlerContext) {
        self.encryptRecord(context: context)
        self.writeCiphertext(context: context, flush: true)
    }

    /// Passes what OpenSSL wrote down the pipeline; the batch's writes complete with that write.
    private func writeCiphertext(context: ChannelHandlerContext, flush: Bool) {
        let promises = self.batchPromises
        self.batchPromises.removeAll()
        let promise: EventLoopPromise<Void>?
        switch promises.count {
        case 0: promise = nil
        case 1: promise = promises[0]
        default:
            promise = context.eventLoop.makePromise()
            promise!.futureResult.whenComplete { result in promises.forEach { $0.completeWith(result) } }
        }
        if let ciphertext = self.connection.takeCiphertext() {
            context.write(self.wrapOutboundOut(ciphertext), promise: promise)
        } else {
            promise?.succeed()
        }
        if flush { context.flush() }
    }

    // MARK: Closing

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            self.closeOutput(context: context)
            context.close(mode: .output, promise: promise)
        case .all:
            self.closeOutput(context: context)
            self.state = .closed
            context.close(mode: .all, promise: promise)
        case .input:
            context.close(mode: .input, promise: promise)
        }
    }

    /// Sends what is packed, then close_notify.
    private func closeOutput(context: ChannelHandlerContext) {
        guard case .active = self.state else { return }
        self.encryptRecord(context: context)
        self.connection.shutdown()
        self.state = .outputClosed
        self.writeCiphertext(context: context, flush: true)
    }

    private func fail(context: ChannelHandlerContext, _ error: TLSError) {
        guard self.state != .closed else { return }
        self.state = .closed
        self.timeout?.cancel()
        self.writeCiphertext(context: context, flush: true)  // OpenSSL's alert, if any
        self.handshakePromise.fail(error)
        self.failWaiting(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func failWaiting(_ error: any Error) {
        while let (_, promise) = self.waitingForHandshake.popFirst() { promise?.fail(error) }
        let promises = self.recordPromises + self.batchPromises
        self.recordPromises.removeAll()
        self.batchPromises.removeAll()
        promises.forEach { $0.fail(error) }
    }
}
