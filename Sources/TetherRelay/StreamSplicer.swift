import NIOCore
import NIOPosix
import Tether
import TetherWire

/// Joins a socket (TCP or Unix) and a stream, both ways, in the style of swift-nio-ssh's glue
/// handler: what a relay does with every connection it carries (spec §7.2).
///
/// - Socket → stream: the socket is read only while the stream takes writes (its send buffer is at
///   most half full), so a stream that cannot send holds at most one read's worth.
/// - Stream → socket: what the stream delivers is written to the socket, and its credit goes back
///   to the peer only when the socket took the octets — a slow socket slows the peer, through
///   credit, not through memory.
/// - FIN ↔ half-close, both ways: the socket's end of input finishes the stream; the stream's FIN
///   shuts the socket's output once everything before it was written.
/// - RESET ↔ abortive close (RST), both ways.
///
/// The socket and the stream may live on different event loops; every touch of either happens on
/// its own loop.
public enum StreamSplicer {
    /// How a splice ended, and what it carried.
    public struct Outcome: Sendable, Hashable {
        /// Octets read from the socket and written to the stream.
        public var toStream = 0
        /// Octets the stream delivered and the socket took.
        public var toSocket = 0
        /// Nil when both directions ended with FIN; otherwise what cut the splice short.
        public var error: String?
    }

    /// The socket options a spliced socket needs: reads only on demand, and half-closure seen as
    /// such. Set them before the socket is active (a bootstrap's channel options), or call
    /// ``splice(_:with:)``, which sets them on an active one.
    public static let autoRead = ChannelOptions.autoRead
    public static let halfClosure = ChannelOptions.allowRemoteHalfClosure

    /// How the stream's octets are written to the socket.
    public enum Framing: Sendable {
        /// As they arrive.
        case octets
        /// One line per message (NDJSON, for METADATA streams: README "Metadata"): a message's
        /// line ends (CR, LF) become spaces — in JSON they can only be whitespace — and its end
        /// becomes `\n`.
        case lines
    }

    /// Splices `channel` and `stream` until both directions have ended or either was cut off;
    /// the future (on the socket's event loop) says how. Call on the socket's event loop.
    /// `observer` sees each read from the stream as it is written to the socket, and whether it
    /// ends a message (the hub keeps each agent's latest METADATA document so), on the socket's loop.
    public static func splice(
        _ channel: any Channel, with stream: TetherStreamHandle, framing: Framing = .octets,
        observer: (@Sendable (ByteBuffer, _ endsMessage: Bool) -> Void)? = nil
    ) -> EventLoopFuture<Outcome> {
        channel.eventLoop.preconditionInEventLoop()
        let glue = SocketGlue(stream: stream, framing: framing, observer: observer, eventLoop: channel.eventLoop)
        do {
            try channel.pipeline.syncOperations.addHandler(glue)
        } catch {
            // The socket went away before the splice (a client that gave up): both ends go.
            stream.eventLoop.execute { stream.reset(.cancel) }
            channel.close(promise: nil)
            glue.done.fail(error)
            return glue.done.futureResult
        }
        let options = channel.setOption(.autoRead, value: false).flatMap {
            channel.setOption(.allowRemoteHalfClosure, value: true)
        }
        options.whenComplete { result in
            switch result {
            case .success: glue.start()
            case .failure(let error): glue.abort("cannot set up the socket: \(error)")
            }
        }
        return glue.done.futureResult
    }
}

/// The socket's half of a splice, on the socket's event loop; it reaches the stream only on the
/// stream's loop.
private final class SocketGlue: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let stream: TetherStreamHandle
    let framing: StreamSplicer.Framing
    let observer: (@Sendable (ByteBuffer, Bool) -> Void)?
    let done: EventLoopPromise<StreamSplicer.Outcome>
    private var context: ChannelHandlerContext?
    private var outcome = StreamSplicer.Outcome()
    /// The socket may be read: the stream takes writes, and no read is already under way.
    private var readRequested = false
    /// The socket's input ended (FIN), or the stream's FIN was written to it.
    private var inputClosed = false
    private var outputClosed = false
    /// Writes to the socket not yet completed; the stream's FIN waits for them.
    private var writesInFlight = 0
    private var streamEnded = false
    private var finished = false

    init(
        stream: TetherStreamHandle, framing: StreamSplicer.Framing, observer: (@Sendable (ByteBuffer, Bool) -> Void)?,
        eventLoop: any EventLoop
    ) {
        self.stream = stream
        self.framing = framing
        self.observer = observer
        self.done = eventLoop.makePromise()
    }

    // MARK: Setup and teardown

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Both sides are set up: the stream calls back when it has data or room; the socket is read.
    func start() {
        let stream = self.stream
        self.onStream {
            stream.onReadable = { [weak self] in self?.streamReadable() }
            stream.onWritable = { [weak self] in self?.streamWritable() }
            self.streamReadable()
            self.streamWritable()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.outputClosed && !self.inputClosed && !self.finished {
            // NIO turns an EOF that arrives after our half-close into a full close, without an
            // `inputClosed` event (errors come through `errorCaught` first): the socket's input
            // ended cleanly, after everything it delivered.
            self.inputClosed = true
            let stream = self.stream
            self.onStream { _ = stream.finish() }
            self.finish(error: nil)
        } else {
            // Closed under us (not by `closeIfBothEnded`): the stream cannot go on.
            self.abort("the socket closed")
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.abort("the socket failed: \(error)")  // a reset by the other end, typically
    }

    /// Cuts both sides off: the stream is reset, the socket closed with RST.
    func abort(_ reason: String) {
        guard !self.finished else { return }
        let stream = self.stream
        self.onStream { stream.reset(.cancel) }
        self.closeAbortively()
        self.finish(error: reason)
    }

    private func closeAbortively() {
        // Not `isActive`: an accepted socket spliced in its initializer is not active yet, and a
        // stream that was reset before the splice began must close it all the same.
        guard let context = self.context else { return }
        // SO_LINGER 0: the close sends RST instead of FIN (spec: RESET ↔ abortive close).
        let channel = context.channel
        guard let socket = channel as? any SocketOptionProvider else { return channel.close(promise: nil) }
        socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }

    private func finish(error: String?) {
        guard !self.finished else { return }
        self.finished = true
        self.outcome.error = error
        let stream = self.stream
        self.onStream {
            stream.onReadable = nil
            stream.onWritable = nil
        }
        self.done.succeed(self.outcome)
    }

    /// Closes the socket once both directions ended cleanly.
    private func closeIfBothEnded() {
        guard self.inputClosed, self.outputClosed, !self.finished, let context = self.context else { return }
        self.finish(error: nil)
        context.close(promise: nil)
    }

    // MARK: Socket → stream

    func read(context: ChannelHandlerContext) {
        context.read()
    }

    /// Reads once more if nothing is under way (the stream said it takes writes).
    private func readSocket() {
        guard let context = self.context, !self.inputClosed, !self.finished, !self.readRequested else { return }
        // NIO forgets a read asked for before the socket is active (an accepted socket spliced in
        // its initializer): `channelActive` asks again.
        guard context.channel.isActive else { return }
        self.readRequested = true
        context.read()
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let stream = self.stream
        self.onStream { if stream.isWritable { self.onSocket { self.readSocket() } } }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        self.outcome.toStream += bytes.readableBytes
        let stream = self.stream
        self.onStream {
            stream.write(bytes).whenFailure { error in self.onSocket { self.abort("the stream refused a write: \(error)") } }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.readRequested = false
        let stream = self.stream
        // Read on only while the stream takes writes; otherwise its `onWritable` asks again.
        self.onStream { if stream.isWritable { self.onSocket { self.readSocket() } } }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        self.inputClosed = true
        let stream = self.stream
        self.onStream { _ = stream.finish() }  // FIN after everything read before it
        self.closeIfBothEnded()
    }

    /// On the stream's loop: it has room.
    private func streamWritable() {
        self.onSocket { self.readSocket() }
    }

    // MARK: Stream → socket

    /// On the stream's loop: write what arrived; credit goes back as the socket takes it.
    private func streamReadable() {
        let stream = self.stream
        var taken: [TetherStreamHandle.StreamRead] = []
        while let read = stream.read() { taken.append(read) }
        let reads = taken
        let failed = stream.failure != nil
        let ended = stream.isReadEnded && !failed
        self.onSocket {
            guard let context = self.context, !self.finished else { return }
            for read in reads {
                self.writesInFlight += 1
                let wire = read.wireOctets
                let octets = read.bytes.readableBytes
                context.write(self.wrapOutboundOut(self.framed(read))).whenComplete { result in
                    self.writesInFlight -= 1
                    if case .success = result {
                        self.outcome.toSocket += octets
                        self.onStream { stream.consumed(wire) }
                    }
                    self.closeOutputIfDone()
                }
            }
            if !reads.isEmpty { context.flush() }
            if failed {
                self.closeAbortively()  // the peer reset the stream: RST the socket
                self.finish(error: "the stream was reset: \(stream.failure.map { "\($0)" } ?? "")")
                return
            }
            if ended { self.streamEnded = true }
            self.closeOutputIfDone()
        }
    }

    private func framed(_ read: TetherStreamHandle.StreamRead) -> ByteBuffer {
        self.observer?(read.bytes, read.endsMessage)
        guard case .lines = self.framing else { return read.bytes }
        var bytes = read.bytes
        if bytes.readableBytesView.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) {
            bytes.withUnsafeMutableReadableBytes { octets in
                for index in octets.indices where octets[index] == UInt8(ascii: "\n") || octets[index] == UInt8(ascii: "\r") {
                    octets[index] = UInt8(ascii: " ")
                }
            }
        }
        if read.endsMessage { bytes.writeInteger(UInt8(ascii: "\n")) }
        return bytes
    }

    /// The stream's FIN becomes the socket's half-close once every write before it is done.
    private func closeOutputIfDone() {
        guard self.streamEnded, self.writesInFlight == 0, !self.outputClosed, let context = self.context else { return }
        self.outputClosed = true
        // With the input already ended this is the end of both: finish first. Shutting down the
        // output of a socket whose input is closed makes NIO close it whole, re-entrantly, and
        // `channelInactive` would otherwise take it for a socket closed under us — and reset a
        // stream that had ended cleanly, discarding what it still had queued.
        guard !self.inputClosed else { return self.closeIfBothEnded() }
        context.close(mode: .output, promise: nil)
    }

    // MARK: Hops

    private func onStream(_ body: @escaping @Sendable () -> Void) {
        let stream = self.stream
        if stream.eventLoop.inEventLoop { body() } else { stream.eventLoop.execute { body() } }
    }

    private func onSocket(_ body: @escaping @Sendable () -> Void) {
        guard let context = self.context else { return }
        if context.eventLoop.inEventLoop { body() } else { context.eventLoop.execute { body() } }
    }
}
