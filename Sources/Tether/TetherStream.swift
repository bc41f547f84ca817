import NIOCore
import TetherSession
import TetherWire

/// One stream, the async face of a ``TetherStreamHandle``: write with backpressure, read chunks
/// or whole messages, half-close, reset.
///
/// Reading through ``chunks`` or ``messages(maxSize:)`` returns credit to the peer as the bytes are
/// handed over (spec §7.2). Use one reader per stream.
public struct TetherStream: Sendable {
    /// The event-loop face of the same stream, for code that runs on the event loop (relays).
    public let handle: TetherStreamHandle

    init(_ handle: TetherStreamHandle) {
        self.handle = handle
    }

    // Immutable properties of the handle: safe to read from any thread.
    public var id: StreamID { self.handle.id }
    public var streamClass: StreamClass { self.handle.streamClass }
    public var service: String { self.handle.service }
    public var metadata: OpenMetadata { self.handle.metadata }
    public var eventLoop: any EventLoop { self.handle.eventLoop }

    private func onLoop<T: Sendable>(
        _ body: @escaping @Sendable (TetherStreamHandle) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let handle = self.handle
        return self.eventLoop.flatSubmit { body(handle) }
    }

    /// Writes `bytes`, waiting while the stream's send buffer is full (spec §7.2). `endMessage`
    /// marks the last octet as the end of a message (END_MSG).
    public func write(_ bytes: ByteBuffer, endMessage: Bool = false) async throws {
        try await self.onLoop { $0.write(bytes, endMessage: endMessage) }.get()
    }

    /// Writes one whole message (END_MSG on its last octet).
    public func writeMessage(_ bytes: ByteBuffer) async throws {
        try await self.write(bytes, endMessage: true)
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

    /// Takes everything buffered (up to 1 MiB), waiting for something; credit goes back for what
    /// was taken. Empty means the peer finished.
    fileprivate func readBatch() async throws -> [TetherStreamHandle.StreamRead] {
        try await self.onLoop { handle in
            handle.waitForReadable().flatMapThrowing {
                if let failure = handle.failure { throw failure }
                var batch: [TetherStreamHandle.StreamRead] = []
                var octets = 0
                var wire = 0
                while octets < 1 << 20, let read = handle.read() {
                    octets += read.bytes.readableBytes
                    wire += read.wireOctets
                    batch.append(read)
                }
                handle.consumed(wire)
                return batch
            }
        }.get()
    }

    public struct Chunks: AsyncSequence, Sendable {
        let stream: TetherStream

        public struct AsyncIterator: AsyncIteratorProtocol {
            let stream: TetherStream
            var batch: [TetherStreamHandle.StreamRead] = []
            var index = 0
            var ended = false

            public mutating func next() async throws -> ByteBuffer? {
                while self.index == self.batch.count {
                    if self.ended { return nil }
                    self.batch = try await self.stream.readBatch()
                    self.index = 0
                    self.ended = self.batch.isEmpty
                }
                defer { self.index += 1 }
                return self.batch[self.index].bytes
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self.stream) }
    }

    public struct Messages: AsyncSequence, Sendable {
        let stream: TetherStream
        let maxSize: Int

        public struct AsyncIterator: AsyncIteratorProtocol {
            let stream: TetherStream
            let maxSize: Int
            var batch: [TetherStreamHandle.StreamRead] = []
            var index = 0

            public mutating func next() async throws -> ByteBuffer? {
                var message: ByteBuffer?
                while true {
                    if self.index == self.batch.count {
                        self.batch = try await self.stream.readBatch()
                        self.index = 0
                        if self.batch.isEmpty {
                            guard message == nil else {
                                throw TetherError(.truncatedMessage, "the stream ended inside a message")
                            }
                            return nil
                        }
                    }
                    var read = self.batch[self.index]
                    self.index += 1
                    if message == nil {
                        message = read.bytes
                    } else {
                        message!.writeBuffer(&read.bytes)
                    }
                    guard message!.readableBytes <= self.maxSize else {
                        await self.stream.reset(.cancel)
                        throw TetherError(.messageTooLarge, "a message exceeded \(self.maxSize) octets")
                    }
                    if read.endsMessage { return message }
                }
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(stream: self.stream, maxSize: self.maxSize)
        }
    }
}
