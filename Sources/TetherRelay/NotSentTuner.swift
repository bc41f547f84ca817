#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// How many unsent octets the kernel may hold ahead of a new frame (`TCP_NOTSENT_LOWAT`, spec
/// §8.2 rule 4): about `time` of sending at the rate TCP measures the connection delivering,
/// kept within `range`. A fast path (loopback, a LAN) gets the top of the range, so the writer
/// is woken seldom; a link-bound path gets a few hundred microseconds of its rate, so a command
/// waits behind little in the kernel.
public struct NotSentLimit: Sendable, Equatable {
    public var time: TimeAmount
    public var range: ClosedRange<Int>

    /// About 250 µs of sending, at least 16 KiB and at most 128 KiB: 16 KiB on a 500 Mbit/s link.
    public init(time: TimeAmount = .microseconds(250), range: ClosedRange<Int> = (16 << 10)...(128 << 10)) {
        self.time = time
        self.range = range
    }

    /// Always `octets`, whatever the rate.
    public static func fixed(_ octets: Int) -> NotSentLimit {
        NotSentLimit(time: .zero, range: octets...octets)
    }

    /// Whether the limit follows the delivery rate at all.
    var isAdaptive: Bool { self.range.lowerBound < self.range.upperBound }

    /// The limit for a connection that delivers `rate` octets per second.
    func octets(rate: Double) -> Int {
        let wanted = rate * Double(self.time.nanoseconds) / 1e9
        return Int(min(max(wanted, Double(self.range.lowerBound)), Double(self.range.upperBound)))
    }
}

/// Retunes a TCP socket's `TCP_NOTSENT_LOWAT` to its ``NotSentLimit``, and keeps the channel's
/// write-buffer watermarks no higher than it (so on a slow path NIO, too, holds only a few hundred
/// microseconds of sending ahead of a command), on the connection's own flushes (an idle
/// connection costs nothing), from the rate the peer acknowledged octets over the
/// last `interval` (`TCP_INFO`'s `tcpi_bytes_acked`). The kernel's own per-ACK delivery-rate
/// sample is not used: behind a local hop that reads in bursts it reads several times the path's
/// rate. A rate measured while the sender had little to send is low, which only makes the limit
/// smaller while there is nothing to queue; on a fast path even the smallest limit sends fast
/// enough for the next measurement to raise it.
final class NotSentTuner: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer

    static let interval: TimeAmount = .milliseconds(50)

    let limit: NotSentLimit
    /// The watermarks the channel was configured with: the most the tuner allows.
    let writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark
    /// The limit set on the socket.
    private var octets: Int
    private var lastSample: (time: NIODeadline, acked: UInt64)?

    /// Sets `limit`'s starting value (the top of its range) on `channel`'s socket, and adds a tuner
    /// when the limit is adaptive. Call on the channel's event loop, before it is active, with the
    /// write-buffer watermarks the channel has.
    static func install(
        _ limit: NotSentLimit, writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark, on channel: any Channel
    ) throws {
        let tuner = NotSentTuner(limit: limit, writeBufferWaterMark: writeBufferWaterMark)
        try tuner.apply(limit.range.upperBound, to: channel)
        guard limit.isAdaptive else { return }
        try channel.pipeline.syncOperations.addHandler(tuner, position: .first)
    }

    init(limit: NotSentLimit, writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark) {
        self.limit = limit
        self.writeBufferWaterMark = writeBufferWaterMark
        self.octets = limit.range.upperBound
    }

    func flush(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        if self.lastSample.map({ now - $0.time >= Self.interval }) ?? true { self.tune(context.channel, now: now) }
        context.flush()
    }

    private func tune(_ channel: any Channel, now: NIODeadline) {
        guard let info = TCPInfo.read(channel) else { return }
        defer { self.lastSample = (now, info.bytesAcked) }
        // After a pause the rate says nothing about the path: start a new measurement.
        guard let last = self.lastSample, now - last.time <= Self.interval * 4 else { return }
        let rate = Double(info.bytesAcked &- last.acked) / (Double((now - last.time).nanoseconds) / 1e9)
        let octets = self.limit.octets(rate: rate)
        // Small moves are not worth a system call.
        guard abs(octets - self.octets) > self.octets / 8, (try? self.apply(octets, to: channel)) != nil else { return }
        self.octets = octets
    }

    /// The kernel's limit, and watermarks no higher than it.
    private func apply(_ octets: Int, to channel: any Channel) throws {
        let option = ChannelOptions.Types.SocketOption(
            level: NIOBSDSocket.OptionLevel.tcp, name: NIOBSDSocket.Option(rawValue: TCP_NOTSENT_LOWAT))
        try channel.syncOptions?.setOption(option, value: SocketOptionValue(octets))
        let high = min(self.writeBufferWaterMark.high, octets)
        let low = min(self.writeBufferWaterMark.low, high / 2)
        try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: low, high: high))
    }
}
