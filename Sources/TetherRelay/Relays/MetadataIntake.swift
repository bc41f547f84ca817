import Foundation
import Metrics
import NIOCore
import Tether
import TetherWire

/// The edge's NDJSON metadata listener, one accepted connection (README "Metadata"): each line is
/// one METADATA message on the connection's stream, so the policy filters it before it is queued
/// (spec/POLICY.md §5). A line that does not go through — too long, dropped by the policy (not
/// JSON, not an object, too deep, …) or cut off with the tunnel — gets a reply line
/// `{"line":N,"error":"…"}` on the same socket, and is counted; the lines after it go on.
///
/// Backpressure both ways: the socket is read only while the stream takes writes and the socket
/// takes replies, so neither a fast sender nor one that never reads its replies holds more than a
/// read's worth. The sender's end of input finishes the stream; the socket closes once every line
/// before it is settled, so a sender that half-closes reads every reply.
final class MetadataIntake: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = MetadataLine
    typealias OutboundOut = ByteBuffer

    private let stream: TetherStreamHandle
    private let counters: Counters
    private var context: ChannelHandlerContext?
    /// Lines seen so far, blank ones included: a reply names the sender's line number.
    private var lineNumber = 0
    /// Lines written to the stream whose write has not completed yet.
    private var unsettled = 0
    private var readRequested = false
    private var inputEnded = false
    private var closed = false

    /// `tether_metadata_lines_total{listener, result}`: `sent`, `too-long`, `dropped` (the
    /// policy), `undelivered` (the stream failed before the line was queued).
    struct Counters: Sendable {
        let sent: Counter
        let tooLong: Counter
        let dropped: Counter
        let undelivered: Counter

        init(listener: String) {
            func counter(_ result: String) -> Counter {
                Counter(label: "tether_metadata_lines_total", dimensions: [("listener", listener), ("result", result)])
            }
            self.sent = counter("sent")
            self.tooLong = counter("too-long")
            self.dropped = counter("dropped")
            self.undelivered = counter("undelivered")
        }
    }

    init(stream: TetherStreamHandle, counters: Counters) {
        self.stream = stream
        self.counters = counters
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let stream = self.stream
        self.onStream {
            stream.onWritable = { [weak self] in
                guard let self else { return }
                self.onSocket { self.readIfRoom() }
            }
            stream.onReadable = { [weak self] in self?.streamReadable() }
            self.streamReadable()
        }
        self.readIfRoom()
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        self.readIfRoom()
    }

    // MARK: Socket → stream

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lineNumber += 1
        let number = self.lineNumber
        switch self.unwrapInboundIn(data) {
        case .blank:
            return
        case .tooLong(let octets):
            self.counters.tooLong.increment()
            // Through the stream's loop, so the reply comes after those of the lines before it.
            self.onStream { self.onSocket { self.reply(line: number, "longer than the listener's maxLine (\(octets) octets); not sent") } }
        case .document(let line):
            self.unsettled += 1
            let stream = self.stream
            self.onStream {
                stream.write(line, endMessage: true).whenComplete { result in
                    // A policy drop leaves the stream as it was; any other failure ended it.
                    let streamFailed = stream.failure != nil
                    self.onSocket { self.settled(line: number, result, streamFailed: streamFailed) }
                }
            }
        }
    }

    private func settled(line number: Int, _ result: Result<Void, any Error>, streamFailed: Bool) {
        self.unsettled -= 1
        switch result {
        case .success:
            self.counters.sent.increment()
        case .failure(let error as TetherError) where error.code == .policyDenied && !streamFailed:
            // The policy dropped this message (audited and counted there); the stream goes on.
            self.counters.dropped.increment()
            self.reply(line: number, error.detail)
        case .failure(let error):
            self.counters.undelivered.increment()
            self.reply(line: number, "not sent: \(error)")
        }
        self.closeIfSettled()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.readRequested = false
        context.flush()
        self.readIfRoom()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.readIfRoom()
        context.fireChannelWritabilityChanged()
    }

    /// Reads once more when the stream takes writes and the socket takes replies.
    private func readIfRoom() {
        guard let context = self.context, context.channel.isActive, context.channel.isWritable, !self.inputEnded,
            !self.readRequested
        else { return }
        let stream = self.stream
        self.onStream {
            guard stream.isWritable else { return }  // its `onWritable` asks again
            self.onSocket {
                guard let context = self.context, !self.readRequested, !self.inputEnded else { return }
                self.readRequested = true
                context.read()
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        self.endInput()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.endInput()  // what the sender sent before it went goes on; the stream ends after it
        self.closed = true
        context.fireChannelInactive()
    }

    /// The sender is done: the stream ends after its lines.
    private func endInput() {
        guard !self.inputEnded else { return }
        self.inputEnded = true
        let stream = self.stream
        self.onStream { _ = stream.finish() }
        self.closeIfSettled()
    }

    private func closeIfSettled() {
        guard self.inputEnded, self.unsettled == 0, !self.closed, let context = self.context else { return }
        self.closed = true
        context.close(promise: nil)
    }

    // MARK: Stream → socket

    /// The plane does not answer on a metadata stream; what it sends is read and let go, so its
    /// credit comes back. A stream that fails ends the listener's connection.
    private func streamReadable() {
        let stream = self.stream
        while let read = stream.read() { stream.consumed(read.wireOctets) }
        guard let failure = stream.failure else { return }
        self.onSocket {
            guard !self.closed else { return }
            self.reply(line: nil, "the metadata stream ended: \(failure)")
            self.inputEnded = true
            self.closeIfSettled()
        }
    }

    // MARK: Replies

    private struct Reply: Encodable {
        var line: Int?
        var error: String
    }

    private func reply(line: Int?, _ error: String) {
        guard let context = self.context, !self.closed, var json = try? JSONEncoder().encode(Reply(line: line, error: error))
        else { return }
        json.append(UInt8(ascii: "\n"))
        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: json)), promise: nil)
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
