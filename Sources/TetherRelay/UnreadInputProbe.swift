import NIOCore

/// Tells whether octets are waiting, unread, in a TCP socket's receive queue (spec §8.2 rule 5):
/// the octets TCP has received (`tcpi_bytes_received` of Linux's `TCP_INFO`, since 4.1) minus
/// those NIO has read, counted here at the head of the pipeline, below TLS. A writing pass asks
/// it before the next one; `SO_MEMINFO`'s receive-queue memory would be cheaper but stays
/// charged after a read on recent kernels, which free read buffers later.
final class UnreadInputProbe: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var read: UInt64 = 0

    /// Adds a probe at the head of `channel`'s pipeline; returns the question to ask it. Nil where
    /// there is no `TCP_INFO` to ask.
    static func add(to channel: any Channel) throws -> (@Sendable (any Channel) -> Bool)? {
        #if os(Linux)
        let probe = UnreadInputProbe()
        try channel.pipeline.syncOperations.addHandler(probe, position: .first)
        let bound = NIOLoopBound(probe, eventLoop: channel.eventLoop)
        return { channel in bound.value.hasUnreadInput(channel) }
        #else
        return nil
        #endif
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.read += UInt64(self.unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    private func hasUnreadInput(_ channel: any Channel) -> Bool {
        guard let info = TCPInfo.read(channel) else { return false }
        return info.bytesReceived > self.read
    }
}
