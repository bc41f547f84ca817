import Metrics
import NIOCore
import TetherSession
import TetherWire

/// The channel handler that runs a ``Session`` over a byte channel (plain TCP, or below it a TLS
/// handler): it decodes frames, feeds the session, routes its events to ``TetherStreamHandle``s,
/// and writes what the session produces while the channel is writable (spec §8.2 shallow queues).
///
/// Everything here runs on the channel's event loop. ``TetherConnection`` is the async face.
public final class TetherConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public struct Configuration: Sendable {
        public var session: SessionConfiguration

        /// How streams compress (spec §9): contexts, batching, bomb limits, where large units
        /// are deflated.
        public var compression = CompressionConfiguration()

        /// Where connection errors this side detects are counted (`tether_connection_errors_total`
        /// with `code` and, for ENHANCE_YOUR_CALM, the abuse `limit`); nil is the process's
        /// bootstrapped `MetricsSystem`.
        public var metricsFactory: (any MetricsFactory)?

        /// The allowlist in force on this connection (spec/POLICY.md §7); nil allows everything.
        /// An edge must set one: nothing leaves the site that it does not allow.
        public var policy: PolicyEnforcer?

        /// Sees every octet the peer sent, decrypted, before the session reads it — from the first
        /// (the preface), on the connection's event loop. For tests that check what crossed the
        /// wire (a policy's filter: nothing it removes leaves the node) and for debugging; nil
        /// (the default) costs nothing.
        public var inboundTap: (@Sendable (ByteBuffer) -> Void)?

        /// `settings` as given, with `OPEN_ACK` announced: this library acknowledges every stream
        /// it accepts with OPENED (spec §5.8) — streams taken from ``TetherConnection/inboundStreams``
        /// as they are taken, those given to an inbound stream handler when it calls
        /// ``TetherStreamHandle/acknowledge()``.
        public init(role: Role, settings: Settings = Settings()) {
            var settings = settings
            settings.openAcknowledgements = true
            self.session = SessionConfiguration(role: role, settings: settings)
        }
    }

    /// What the transport below established — facts, not knobs: only ``TetherTransport`` (or a
    /// test in this package) sets them, so no caller can claim an identity on a plain socket.
    package struct TransportFacts: Sendable {
        /// The peer's verified identity (spec §2.2) and which certificate it presented, from the
        /// TLS handshake; nil on the dialer and on plain transports.
        package var peerIdentity: TetherIdentity?
        package var peerCertificateSHA256: String?
        /// When the peer's certificate expires, in seconds since 1970 (UTC).
        package var peerCertificateNotAfter: Int64?
        /// Set when TLS runs below: frames are written whole, packed into writes of at most this
        /// many octets, each one TLS record, so no frame straddles two records (spec §2.1). Nil
        /// for plain transports, where large payloads are written without a copy.
        package var recordSize: Int?
        /// Whether octets are waiting, unread, in the transport below (spec §8.2 rule 5). A
        /// sender the kernel lets write at once (loopback, a fast LAN) stops between writing
        /// passes while this says yes, so what arrived — a command, the answer to one, credit — is
        /// read first; the read goes on writing. Nil: passes follow each other until the credit
        /// or the data runs out.
        package var unreadInput: (@Sendable (any Channel) -> Bool)?

        package init() {}
    }

    /// Called on the event loop for every stream the peer opens, instead of queueing it for
    /// ``TetherConnection/inboundStreams``. The callee accepts or refuses it at once (relays).
    public typealias InboundStreamHandler = @Sendable (TetherStreamHandle) -> Void

    var session: Session
    private var decoder: FrameDecoder
    private let configuration: Configuration
    private let facts: TransportFacts
    private var context: ChannelHandlerContext?
    /// This connection as the application sees it, while the handler is in a pipeline.
    private(set) var connection: TetherConnection?
    private var streams: [StreamID: TetherStreamHandle] = [:]
    private var started = false
    private var flushScheduled = false
    private var flushing = false
    private var flushAgain = false
    /// Set while a writing pass stopped for input waiting unread (spec §8.2 rule 5).
    private var readFallback: Scheduled<Void>?
    private var closeRequested = false
    private var isShutDown = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// Frees idle compression contexts (spec §9.3) while any stream compresses.
    private var compressionSweep: Scheduled<Void>?

    private let inboundStreamHandler: InboundStreamHandler?
    private var pendingInbound = CircularBuffer<TetherStreamHandle>(initialCapacity: 0)
    /// Streams that received data during this read batch; woken together at its end.
    private var readersToWake: [TetherStreamHandle] = []
    private var inboundWaiters = CircularBuffer<EventLoopPromise<TetherStreamHandle?>>(initialCapacity: 0)
    private var openWaiters: [PendingOpen] = []
    private var pingWaiters: [UInt64: EventLoopPromise<TimeAmount>] = [:]
    private let readyPromise: EventLoopPromise<Settings>
    private let closedPromise: EventLoopPromise<ErrorCode?>
    private let goAwayPromise: EventLoopPromise<GoAwayFrame>
    /// Why the connection ended, once it has.
    private var closedError: TetherError?

    private struct PendingOpen {
        var streamClass: StreamClass
        var service: String
        var metadata: OpenMetadata
        var compression: CompressionAlgorithm?
        var policy: StreamPolicy?
        var promise: EventLoopPromise<TetherStreamHandle>
    }

    public convenience init(
        configuration: Configuration, eventLoop: any EventLoop, inboundStreamHandler: InboundStreamHandler? = nil
    ) {
        self.init(configuration: configuration, facts: TransportFacts(), eventLoop: eventLoop, inboundStreamHandler: inboundStreamHandler)
    }

    package init(
        configuration: Configuration, facts: TransportFacts, eventLoop: any EventLoop,
        inboundStreamHandler: InboundStreamHandler? = nil
    ) {
        self.configuration = configuration
        self.facts = facts
        self.session = Session(configuration: configuration.session, now: .now())
        self.decoder = FrameDecoder(limits: .init(configuration.session.settings), expectsPreface: true)
        self.inboundStreamHandler = inboundStreamHandler
        self.readyPromise = eventLoop.makePromise(of: Settings.self)
        self.closedPromise = eventLoop.makePromise(of: ErrorCode?.self)
        self.goAwayPromise = eventLoop.makePromise(of: GoAwayFrame.self)
    }

    /// Succeeds with the peer's settings once its preface arrived (spec §3.1).
    public var ready: EventLoopFuture<Settings> { self.readyPromise.futureResult }

    /// Succeeds when the connection has closed, with the GOAWAY code that ended it, if any.
    public var closed: EventLoopFuture<ErrorCode?> { self.closedPromise.futureResult }

    /// Succeeds when the peer sent GOAWAY (spec §10.2): time to open new streams elsewhere. Fails
    /// if the connection closes without one.
    public var goAwayReceived: EventLoopFuture<GoAwayFrame> { self.goAwayPromise.futureResult }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.connection = TetherConnection(
            channel: context.channel, facts: self.facts, handler: NIOLoopBound(self, eventLoop: context.eventLoop))
        self.configuration.policy?.register(self, on: context.eventLoop)
        if context.channel.isActive { self.start(context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.shutDown(TetherError.closed(nil, "handler removed"))
        self.context = nil
        self.connection = nil  // it holds this handler
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    /// Sends the preface (spec §3.1): magic, then the SETTINGS the session produces first.
    private func start(context: ChannelHandlerContext) {
        guard !self.started else { return }
        self.started = true
        context.write(self.wrapOutboundOut(ByteBuffer(bytes: Preface.magic)), promise: nil)
        self.flushOutput()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closeRequested else { return }  // closing: what arrives now is drained unread
        self.decoder.append(self.unwrapInboundIn(data))
        let now = NIODeadline.now()
        do {
            while !self.session.hasFailed, let frame = try self.decoder.nextFrame() {
                self.dispatch(self.session.receive(frame, now: now))
            }
        } catch {
            self.dispatch(self.session.decodingFailed(error))
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        self.wakeReaders()
        self.flushOutput()
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.flushOutput() }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.shutDown(self.closedError ?? TetherError.closed(nil, "the transport closed"))
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.shutDown(TetherError.closed(nil, "transport error: \(error)"))
        context.close(promise: nil)
    }

    /// Wakes every reader that got data in this read batch (once each, however many frames).
    private func wakeReaders() {
        guard !self.readersToWake.isEmpty else { return }
        let readers = self.readersToWake
        self.readersToWake.removeAll(keepingCapacity: true)
        for reader in readers { reader.wakeReader() }
    }

    // MARK: Session events

    private func dispatch(_ events: SessionEvents) {
        for event in events {
            switch event {
            case .ready(let peer):
                self.readyPromise.succeed(peer)
                self.retryOpens()
            case .opened(let inbound):
                var metadata = inbound.metadata
                var policy: StreamPolicy?
                if let enforcer = self.configuration.policy {
                    switch enforcer.admit(
                        openedLocally: false, id: inbound.id, service: inbound.service,
                        streamClass: inbound.streamClass, metadata: inbound.metadata, peer: self.peerName)
                    {
                    case .success(let admitted):
                        (policy, metadata) = admitted
                    case .failure:
                        self.dispatch(self.session.refuse(inbound.id, code: .policyDenied, now: .now()))
                        continue
                    }
                }
                let handle = self.makeHandle(
                    id: inbound.id, streamClass: inbound.streamClass, service: inbound.service,
                    metadata: metadata, compression: inbound.compression, policy: policy)
                if let handler = self.inboundStreamHandler {
                    self.session.accept(inbound.id)
                    handler(handle)
                } else if let waiter = self.inboundWaiters.popFirst() {
                    handle.acknowledge()  // taken by the application: accepted and reached (spec §5.8)
                    waiter.succeed(handle)
                } else {
                    self.pendingInbound.append(handle)
                }
            case .data(let id, let payload, let flags):
                guard let handle = self.streams[id] else { continue }
                handle.deliver(payload, flags: flags)
                if !handle.wakeScheduled {
                    handle.wakeScheduled = true
                    self.readersToWake.append(handle)
                }
                if flags.contains(.fin) && !self.session.isLive(id) {
                    self.streams.removeValue(forKey: id)?.detach()
                }
            case .acknowledged(let id):
                self.streams[id]?.acknowledgedByPeer()
            case .reset(let id, let code):
                self.streams.removeValue(forKey: id)?.fail(TetherError.reset(code))
            case .goAway(let frame):
                self.retryOpens()  // waiting opens now fail with `draining`
                self.goAwayPromise.succeed(frame)
            case .streamCredit:
                self.retryOpens()
            case .pong(let opaque, let rtt):
                self.pingWaiters.removeValue(forKey: opaque)?.succeed(rtt)
            case .connectionError(let code, let reason):
                self.closedError = TetherError.closed(code, reason)
                Counter(
                    label: "tether_connection_errors_total",
                    dimensions: [("code", code.name), ("limit", self.session.trippedLimit?.rawValue ?? "none")],
                    factory: self.configuration.metricsFactory ?? MetricsSystem.factory
                ).increment()
            }
        }
    }

    private func makeHandle(
        id: StreamID, streamClass: StreamClass, service: String, metadata: OpenMetadata,
        compression: CompressionAlgorithm, policy: StreamPolicy?
    ) -> TetherStreamHandle {
        let handle = TetherStreamHandle(
            id: id, streamClass: streamClass, service: service, metadata: metadata, compression: compression,
            compressesOutbound: self.session.mayCompress(id), maxCompressedUnit: self.session.maxCompressedUnit(id),
            compressionConfiguration: self.configuration.compression, policy: policy, owner: self,
            connection: self.connection!, sendBufferLimit: self.configuration.session.sendBufferLimit)
        self.streams[id] = handle
        if handle.usesCompression { self.startCompressionSweep() }
        return handle
    }

    // MARK: Output

    /// Flushes at the end of the current event-loop tick, so writes made together go out together.
    /// A write made while a pass is running joins that pass or the next.
    func scheduleFlush() {
        guard !self.flushScheduled, !self.isShutDown, let context = self.context else { return }
        guard !self.flushing else {
            self.flushAgain = true
            return
        }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutput()
        }
    }

    /// Goes on writing if the read that ``Configuration/unreadInput`` promised does not come (a
    /// handler below that holds reads back). Any pass that runs first cancels it.
    private func continueUnlessRead() {
        guard self.readFallback == nil, !self.isShutDown, let context = self.context else { return }
        self.readFallback = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(1)) {
            self.readFallback = nil
            self.flushOutput()
        }
    }

    /// Writes what the session produces while the channel is writable, then flushes. Flushing can
    /// make the channel writable again from inside this method (NIO reports writability during
    /// `flush`), and writes can come in while it runs; either is remembered and served by another
    /// pass — unless input is waiting unread: where the kernel takes every write at once, passes
    /// in a loop would write all the credit the peer granted before this event loop reads again,
    /// and a command arriving meanwhile would wait behind that burst (spec §8.2 rule 5).
    private func flushOutput() {
        guard let context = self.context, self.started else { return }
        guard !self.flushing else {
            self.flushAgain = true
            return
        }
        self.flushing = true
        self.readFallback?.cancel()
        self.readFallback = nil
        var exhausted = false
        var inputWaiting = false
        repeat {
            self.flushAgain = false
            exhausted = self.writeProduced(context: context)
            inputWaiting = self.flushAgain && self.facts.unreadInput?(context.channel) == true
        } while self.flushAgain && !inputWaiting
        self.flushing = false
        if inputWaiting { self.continueUnlessRead() }
        self.rearmTimer()
        if exhausted && (self.session.hasFailed || self.session.isDrained) { self.closeAfterWrites() }
    }

    /// One pass: produce and write while writable, then flush. Returns whether the session had
    /// nothing more to send.
    private func writeProduced(context: ChannelHandlerContext) -> Bool {
        guard self.session.mayProduce else { return true }
        let now = NIODeadline.now()
        let recordSize = self.facts.recordSize
        var pending = context.channel.allocator.buffer(capacity: recordSize ?? 4_096)
        var wrote = false
        var exhausted = false
        let dataBefore = self.session.counters.dataOctetsSent
        var gathered = 0
        defer {
            let data = self.session.counters.dataOctetsSent - dataBefore
            if data > 0 {
                DataPathStatistics.Counters.dataOctetsWritten.wrappingAdd(data, ordering: .relaxed)
                DataPathStatistics.Counters.dataOctetsCopied.wrappingAdd(data - gathered, ordering: .relaxed)
            }
        }
        while context.channel.isWritable {
            let room = recordSize.map { $0 - pending.readableBytes } ?? .max
            guard let produced = self.session.produce(into: &pending, now: now, room: room) else {
                if recordSize != nil && pending.readableBytes > 0 {
                    // Maybe the next frame did not fit: send this record and ask again with a whole one.
                    context.write(self.wrapOutboundOut(pending), promise: nil)
                    pending.clear()  // TLS encrypted it at once: the same memory serves the next record
                    wrote = true
                    continue
                }
                exhausted = true
                break
            }
            if let payload = produced.payload {
                gathered += payload.readableBytes
                context.write(self.wrapOutboundOut(pending), promise: nil)
                pending = context.channel.allocator.buffer(capacity: 4_096)
                context.write(self.wrapOutboundOut(payload), promise: nil)
            } else if recordSize == nil && pending.readableBytes >= 16_384 {
                context.write(self.wrapOutboundOut(pending), promise: nil)
                pending = context.channel.allocator.buffer(capacity: 4_096)
            }
            if let id = produced.writable { self.streams[id]?.becameWritable() }
            if let id = produced.closed { self.streams.removeValue(forKey: id)?.detach() }
            wrote = true
        }
        if pending.readableBytes > 0 { context.write(self.wrapOutboundOut(pending), promise: nil) }
        if wrote { context.flush() }
        return exhausted
    }

    /// Closes once every write so far has reached the transport (spec §10.2 step 4, §10.3), and
    /// lingers: our output ends (close_notify, FIN) and the input is read and dropped until the
    /// peer closes too, at most ``lingerTime``. Closing with unread input would answer the
    /// peer's last frames (credit for what we sent) with a RST, and a RST makes the peer's kernel
    /// discard what it received and its application has not read yet — the end of our last stream.
    private func closeAfterWrites() {
        guard let context = self.context, !self.closeRequested else { return }
        self.closeRequested = true
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: done)
        done.futureResult.assumeIsolated().whenComplete { _ in
            let outputClosed = context.eventLoop.makePromise(of: Void.self)
            context.close(mode: .output, promise: outputClosed)
            outputClosed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
            context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) { context.close(promise: nil) }
        }
    }

    /// How long a closing connection reads on, waiting for the peer to close too.
    static let lingerTime = TimeAmount.seconds(2)

    // MARK: Timers

    /// Keeps one timer armed at or before the session's next deadline. Deadlines mostly move later
    /// (every frame received pushes keepalive out), so a timer that would fire early is kept: it
    /// ticks harmlessly and arms the next. Only an earlier deadline replaces it.
    private func rearmTimer() {
        guard let context = self.context, let deadline = self.session.nextDeadline else { return }
        if let armed = self.timerDeadline, armed <= deadline { return }
        self.timer?.cancel()
        self.timerDeadline = deadline
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timerDeadline = nil
            self.dispatch(self.session.tick(now: .now()))
            self.flushOutput()
        }
    }

    /// Every ``CompressionConfiguration/sweepInterval`` while streams compress: contexts that
    /// idled are freed (spec §9.3).
    private func startCompressionSweep() {
        guard self.compressionSweep == nil, let context = self.context else { return }
        let interval = self.configuration.compression.sweepInterval
        self.compressionSweep = context.eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.compressionSweep = nil
            let now = NIODeadline.now()
            var any = false
            for handle in self.streams.values where handle.usesCompression {
                handle.freeIdleContexts(now: now)
                any = true
            }
            if any { self.startCompressionSweep() }
        }
    }

    // MARK: Teardown

    /// Fails every stream and waiter; runs once, when the transport closes or the handler goes.
    private func shutDown(_ error: TetherError) {
        guard !self.isShutDown else { return }
        self.isShutDown = true
        // What the last read delivered — often a stream's last octets and FIN, then the peer's
        // close in the same read — is woken for here: no `channelReadComplete` follows a close.
        self.wakeReaders()
        self.configuration.policy?.unregister(self)
        // spec §7.4: the windows' growth goes back to the process pool with the connection.
        self.session.releaseWindowGrowth()
        let error = self.closedError ?? error
        self.closedError = error
        self.timer?.cancel()
        self.timer = nil
        self.compressionSweep?.cancel()
        self.compressionSweep = nil
        self.readFallback?.cancel()
        self.readFallback = nil
        let streams = self.streams
        self.streams.removeAll()
        for handle in streams.values { handle.fail(error) }
        for handle in self.pendingInbound { handle.fail(error) }
        self.pendingInbound.removeAll()
        while let waiter = self.inboundWaiters.popFirst() { waiter.succeed(nil) }
        let opens = self.openWaiters
        self.openWaiters.removeAll()
        for open in opens { open.promise.fail(error) }
        let pings = self.pingWaiters
        self.pingWaiters.removeAll()
        for ping in pings.values { ping.fail(error) }
        self.readyPromise.fail(error)  // ignored when the preface already arrived
        self.goAwayPromise.fail(error)  // ignored when a GOAWAY arrived
        self.closedPromise.succeed(error.errorCode)
    }
}

// MARK: - The event-loop API

extension TetherConnectionHandler {
    /// Opens a stream (spec §6.2). Waits for the peer's preface and for stream-count credit.
    /// Opens a stream (spec §6.2). Waits for the peer's preface and for stream-count credit.
    ///
    /// - Parameter compression: nil picks the class's default (spec §8.1): deflate for LOGS when the
    ///   peer can inflate it, none otherwise.
    public func openStream(
        _ streamClass: StreamClass, service: String, metadata: OpenMetadata = OpenMetadata(),
        compression: CompressionAlgorithm? = nil
    ) -> EventLoopFuture<TetherStreamHandle> {
        let eventLoop = self.readyPromise.futureResult.eventLoop
        eventLoop.preconditionInEventLoop()
        var policy: StreamPolicy?
        var metadata = metadata
        if let enforcer = self.configuration.policy {
            // Checked before anything is queued: a refused stream sends nothing (spec/POLICY.md §3).
            switch enforcer.admit(
                openedLocally: true, id: nil, service: service, streamClass: streamClass, metadata: metadata,
                peer: self.peerName)
            {
            case .success(let admitted):
                (policy, metadata) = admitted
            case .failure(let error):
                return eventLoop.makeFailedFuture(error)
            }
        }
        let open = PendingOpen(
            streamClass: streamClass, service: service, metadata: metadata, compression: compression,
            policy: policy, promise: eventLoop.makePromise())
        if let error = self.closedError {
            open.promise.fail(error)
        } else if !self.attemptOpen(open) {
            self.openWaiters.append(open)
        }
        return open.promise.futureResult
    }

    /// Tries an open now; false when it has to wait for the preface or for credit.
    private func attemptOpen(_ open: PendingOpen) -> Bool {
        guard let peer = self.session.peerSettings else { return false }
        let compression =
            open.compression ?? (open.streamClass == .logs && peer.compression.contains(.deflate) ? .deflate : .none)
        switch self.session.openStream(
            open.streamClass, service: open.service, metadata: open.metadata, compression: compression, now: .now())
        {
        case .success(let id):
            let handle = self.makeHandle(
                id: id, streamClass: open.streamClass, service: open.service, metadata: open.metadata,
                compression: compression, policy: open.policy)
            self.scheduleFlush()
            open.promise.succeed(handle)
        case .failure(.notReady), .failure(.noCredit):
            return false
        case .failure(let error):
            open.promise.fail(TetherError(.openFailed, openError: error, "cannot open \(open.service): \(error)"))
        }
        return true
    }

    private func retryOpens() {
        let waiting = self.openWaiters
        self.openWaiters.removeAll()
        for open in waiting where !self.attemptOpen(open) {
            self.openWaiters.append(open)
        }
    }

    /// The next stream the peer opened and the application has not taken yet; nil once the
    /// connection has closed. Taking it accepts it (spec §6.2).
    public func nextInboundStream() -> EventLoopFuture<TetherStreamHandle?> {
        self.nextInboundStreams(upTo: 1).map(\.first)
    }

    /// Up to `count` streams the peer opened and the application has not taken yet, waiting for
    /// at least one; empty once the connection has closed. Taking them accepts them (spec §6.2).
    /// An application that takes a burst of streams in one hop accepts each in time however
    /// loaded its threads are — one hop per stream could outlast the open timeout.
    public func nextInboundStreams(upTo count: Int) -> EventLoopFuture<[TetherStreamHandle]> {
        let eventLoop = self.readyPromise.futureResult.eventLoop
        eventLoop.preconditionInEventLoop()
        var taken: [TetherStreamHandle] = []
        while taken.count < count, let handle = self.pendingInbound.popFirst() {
            guard handle.failure == nil else { continue }  // reset or timed out while waiting
            handle.acknowledge()  // taken by the application: accepted and reached (spec §5.8)
            taken.append(handle)
        }
        if !taken.isEmpty || self.closedError != nil { return eventLoop.makeSucceededFuture(taken) }
        let promise = eventLoop.makePromise(of: TetherStreamHandle?.self)
        self.inboundWaiters.append(promise)
        return promise.futureResult.map { $0.map { [$0] } ?? [] }
    }

    /// Sends a PING and succeeds with the round trip when its ACK arrives (spec §5.6). Fails when
    /// the connection closes first, or when 8 PINGs of the application are already unanswered.
    public func ping() -> EventLoopFuture<TimeAmount> {
        let eventLoop = self.readyPromise.futureResult.eventLoop
        eventLoop.preconditionInEventLoop()
        if let error = self.closedError { return eventLoop.makeFailedFuture(error) }
        guard let opaque = self.session.ping(now: .now()) else {
            return eventLoop.makeFailedFuture(TetherError(.notReady, "cannot PING: not ready, or 8 PINGs unanswered"))
        }
        let promise = eventLoop.makePromise(of: TimeAmount.self)
        self.pingWaiters[opaque] = promise
        self.flushOutput()
        return promise.futureResult
    }

    /// Refuses the connection (spec §10.3): GOAWAY `REFUSED`, then close once it is written.
    public func refuse(_ reason: String) {
        self.dispatch(self.session.refuse(reason: reason))
        self.flushOutput()
    }

    /// Starts a graceful drain (spec §10.2): no new streams; the connection closes when the last
    /// stream finishes, or when the grace period ends.
    /// `debug` tells the peer why (no secrets: spec §5.7).
    public func goAway(code: ErrorCode = .noError, debug: String = "") {
        self.session.goAway(code: code, debug: debug, now: .now())
        self.retryOpens()
        self.flushOutput()
    }

    /// What the audit log calls the peer: its verified identity, or the hub an edge dialled.
    var peerName: String {
        if let identity = self.facts.peerIdentity { return identity.description }
        return self.configuration.session.role == .dialer ? "hub" : "unauthenticated"
    }

    /// The policy was reloaded (spec/POLICY.md §7): streams it now forbids are reset.
    func policyChanged() {
        guard let policy = self.configuration.policy?.policy, !self.isShutDown else { return }
        for (id, handle) in self.streams {
            if let stream = handle.policy, !stream.reconsider(policy, id: id) { handle.reset(.policyDenied) }
        }
        self.flushOutput()
    }

    /// Counters of the session, for metrics and tests.
    public var counters: SessionCounters { self.session.counters }

    /// Live streams.
    public var activeStreamCount: Int { self.session.activeStreamCount }

    /// Live streams by class.
    public var activeStreamsByClass: PerClass<Int> { self.session.activeStreamsByClass }

    /// Octets this end holds for its streams: delivered and not yet taken (credit bounds it,
    /// spec §7.2), and written and not yet sent (the send buffers bound it).
    package var heldOctets: Int {
        self.streams.reduce(0) { $0 + self.session.unconsumedOctets($1.key) + $1.value.bufferedOutboundOctets }
    }

    /// The receive windows of the open streams, together: what the peer may send before it waits.
    package var receiveWindows: Int {
        self.streams.keys.reduce(0) { $0 + self.session.receiveWindow($1) }
    }

    // Called by TetherStreamHandle.

    func bufferedOctets(_ id: StreamID) -> Int {
        self.session.bufferedOctets(id)
    }

    func streamWrite(_ id: StreamID, _ bytes: ByteBuffer, endMessage: Bool, compression: DataFrame.Flags) throws {
        let result =
            compression.isEmpty
            ? self.session.write(id, bytes, endMessage: endMessage, now: .now())
            : self.session.writeCompressed(
                id, bytes, endMessage: endMessage, resetContext: compression.contains(.resetContext), now: .now())
        if case .failure(let error) = result {
            throw TetherError(.streamClosed, "stream \(id) refused the write: \(error)")
        }
        self.scheduleFlush()
    }

    func streamFinish(_ id: StreamID) {
        _ = self.session.finish(id)
        self.scheduleFlush()
    }

    func streamReset(_ id: StreamID, code: ErrorCode) {
        self.streams.removeValue(forKey: id)
        self.session.reset(id, code: code)
        self.scheduleFlush()
    }

    /// OPENED for a stream the peer opened (spec §5.8).
    func streamAcknowledge(_ id: StreamID) {
        self.session.acknowledge(id)
        self.scheduleFlush()
    }

    func streamRefuse(_ id: StreamID, code: ErrorCode) {
        self.streams.removeValue(forKey: id)
        self.dispatch(self.session.refuse(id, code: code, now: .now()))
        self.scheduleFlush()
    }

    /// A stream error the peer caused, found above the session (a bomb, invalid DEFLATE: spec
    /// §9.4): RESET, counted toward the peer's reset rate (spec §12).
    func streamError(_ id: StreamID, code: ErrorCode) {
        self.streams.removeValue(forKey: id)
        self.dispatch(self.session.streamError(id, code: code, now: .now()))
        self.scheduleFlush()
    }

    func streamConsumed(_ id: StreamID, octets: Int) {
        self.session.consume(id, octets: octets, now: .now())
        self.scheduleFlush()
    }
}
