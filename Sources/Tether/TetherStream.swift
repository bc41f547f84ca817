import NIOCore
import TetherSession
import TetherWire

/// One stream, the async face of a ``TetherStreamHandle``: it adds suspension and nothing else —
/// every octet goes through the handle's pipeline (policy, compression) on its event loop.
///
/// Reading through ``chunks`` or ``messages(maxSize:)`` returns credit to the peer as the bytes are
/// handed over (spec §7.2). Use one reader per stream.
public struct TetherStream: Sendable {
    /// The event-loop face of the same stream, for code that runs on the event loop (relays).
    public let handle: TetherStreamHandle

    /// The async face of a stream taken on the event loop (an inbound-stream handler's).
    public init(_ handle: TetherStreamHandle) {
        self.handle = handle
    }

    // Immutable properties of the handle: safe to read from any thread.
    public var id: StreamID { self.handle.id }
    public var streamClass: StreamClass { self.handle.streamClass }
    public var service: String { self.handle.service }
    public var metadata: OpenMetadata { self.handle.metadata }
    public var eventLoop: any EventLoop { self.handle.eventLoop }
    /// The connection the stream belongs to (the peer's verified identity, its address).
    public var connection: TetherConnection { self.handle.connection }

    private func onLoop<T: Sendable>(
        _ body: @escaping @Sendable (TetherStreamHandle) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let handle = self.handle
        return self.eventLoop.flatSubmit { body(handle) }
    }

    /// Writes `bytes`, waiting while the stream's send buffer is full (spec §7.2). `endMessage`
    /// marks the last octet as the end of a message (END_MSG). See
    /// ``TetherStreamHandle/write(_:endMessage:)``: compression and the policy filter apply.
    public func write(_ bytes: ByteBuffer, endMessage: Bool = false) async throws {
        try await self.onLoop { $0.write(bytes, endMessage: endMessage) }.get()
    }

    /// Writes one whole message (END_MSG on its last octet).
    public func writeMessage(_ bytes: ByteBuffer) async throws {
        try await self.write(bytes, endMessage: true)
    }

    /// Sends what a compressed stream has batched (spec §9.3). Nothing to do on other streams.
    public func flush() async throws {
        try await self.onLoop {
            $0.flush()
            return $0.eventLoop.makeSucceededVoidFuture()
        }.get()
    }

    /// Half-closes: FIN after everything written (spec §6.4). Reading continues.
    public func finish() async throws {
        try await self.onLoop { $0.finish() }.get()
    }

    /// Ends the stream in both directions (spec §6.5).
    public func reset(_ code: ErrorCode = .cancel) async {
        try? await self.onLoop {
            $0.reset(code)
            return $0.eventLoop.makeSucceededVoidFuture()
        }.get()
    }

    /// The stream's bytes as they arrive; ends at the peer's FIN, throws if the stream is reset.
    public var chunks: Chunks { Chunks(stream: self) }

    /// Whole messages (END_MSG-delimited), each at most `maxSize` octets; ends at the peer's FIN.
    public func messages(maxSize: Int = 1 << 20) -> Messages { Messages(stream: self, maxSize: maxSize) }

    /// Takes what is ready (up to 1 MiB), waiting for something; credit goes back for what was
    /// taken. Empty means the peer finished.
    fileprivate func readBatch() async throws -> [TetherStreamHandle.StreamRead] {
        while true {
            let (batch, ended) = try await self.onLoop { handle in
                handle.waitForReadable().flatMapThrowing { () throws -> ([TetherStreamHandle.StreamRead], Bool) in
                    var batch: [TetherStreamHandle.StreamRead] = []
                    var octets = 0
                    var wire = 0
                    while octets < 1 << 20, let read = handle.read() {
                        octets += read.bytes.readableBytes
                        wire += read.wireOctets
                        batch.append(read)
                    }
                    // What was read before the stream failed is delivered first; the error next time.
                    if let failure = handle.failure, batch.isEmpty { throw failure }
                    handle.consumed(wire)
                    return (batch, handle.isReadEnded)
                }
            }.get()
            // Nothing ready yet is possible: a frame the hub's re-check gathered into a message.
            if !batch.isEmpty || ended { return batch }
        }
    }

    /// The stream as the application reads it: plain pieces, and whether each ends a message.
    struct PieceReader {
        let stream: TetherStream
        var batch: [TetherStreamHandle.StreamRead] = []
        var index = 0
        var ended = false

        /// The next piece and whether it ends a message; nil at the peer's FIN.
        mutating func next() async throws -> (bytes: ByteBuffer, endsMessage: Bool)? {
            if self.index == self.batch.count {
                if self.ended { return nil }
                self.batch = try await self.stream.readBatch()
                self.index = 0
                if self.batch.isEmpty {
                    self.ended = true
                    return nil
                }
            }
            let read = self.batch[self.index]
            self.index += 1
            return (read.bytes, read.endsMessage)
        }
    }

    public struct Chunks: AsyncSequence, Sendable {
        let stream: TetherStream

        public struct AsyncIterator: AsyncIteratorProtocol {
            var reader: PieceReader

            public mutating func next() async throws -> ByteBuffer? {
                try await self.reader.next()?.bytes
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(reader: PieceReader(stream: self.stream)) }
    }

    public struct Messages: AsyncSequence, Sendable {
        let stream: TetherStream
        let maxSize: Int

        public struct AsyncIterator: AsyncIteratorProtocol {
            var reader: PieceReader
            let maxSize: Int

            public mutating func next() async throws -> ByteBuffer? {
                var message: ByteBuffer?
                while let (bytes, endsMessage) = try await self.reader.next() {
                    var bytes = bytes
                    if message == nil {
                        message = bytes
                    } else {
                        message!.writeBuffer(&bytes)
                    }
                    guard message!.readableBytes <= self.maxSize else {
                        await self.reader.stream.reset(.cancel)
                        throw TetherError(.messageTooLarge, "a message exceeded \(self.maxSize) octets")
                    }
                    if endsMessage { return message }
                }
                guard message == nil else { throw TetherError(.truncatedMessage, "the stream ended inside a message") }
                return nil
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(reader: PieceReader(stream: self.stream), maxSize: self.maxSize)
        }
    }
}
