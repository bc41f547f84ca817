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

    private func onLoop<T: Sendable>(
        _ body: @escaping @Sendable (TetherStreamHandle) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let handle = self.handle
        return self.eventLoop.flatSubmit { body(handle) }
    }

    /// Writes `bytes`, waiting while the stream's send buffer is full (spec §7.2). `endMessage`
    /// marks the last octet as the end of a message (END_MSG).
    ///
    /// On a compressed stream (spec §9) small writes are batched: they are compressed, here and
    /// not on the event loop, once 16 KiB have gathered, at a message end, on ``flush()``, or
    /// 10 ms after the first of them.
    ///
    /// On an edge's METADATA stream the policy gathers each message and sends it filtered, before
    /// compression, when `endMessage` completes it; a message it drops throws
    /// ``TetherError/Code/policyDenied`` and the stream carries on (spec/POLICY.md §5).
    public func write(_ bytes: ByteBuffer, endMessage: Bool = false) async throws {
        var bytes = bytes
        var endMessage = endMessage
        if let policy = self.handle.policy, policy.filtersOutbound {
            switch policy.filter(bytes, endMessage: endMessage) {  // here, in the writer's task
            case .incomplete: return
            case .message(let message): (bytes, endMessage) = (message, true)
            case .dropped(let error): throw error
            }
        }
        guard let codec = self.handle.codec, self.handle.compressesOutbound else {
            try await self.onLoop { [bytes, endMessage] in $0.writeFiltered(bytes, endMessage: endMessage) }.get()
            return
        }
        try await self.compress(bytes, endMessage: endMessage, codec: codec)
        if codec.needsFlushTimer() {
            let stream = self
            Task {
                try? await Task.sleep(for: .nanoseconds(codec.configuration.flushDelay.nanoseconds))
                try? await stream.flush()
            }
        }
    }

    /// Sends what a compressed stream has batched (spec §9.3). Nothing to do on other streams.
    public func flush() async throws {
        guard let codec = self.handle.codec, self.handle.compressesOutbound else { return }
        try await self.compress(nil, endMessage: false, codec: codec)
    }

    /// Compresses (here, not on the event loop) and queues the units on the stream in order; a
    /// compression failure resets the stream (spec §9.4).
    private func compress(_ bytes: ByteBuffer?, endMessage: Bool, codec: StreamCodec) async throws {
        let handle = self.handle
        let written: EventLoopFuture<Void>?
        do {
            written = try codec.write(bytes, endMessage: endMessage, maxUnit: handle.maxCompressedUnit, now: .now()) {
                units in
                // Nothing to send: touch nothing (the timer's flush may come after the loop stopped).
                guard !units.isEmpty else { return nil }
                // Submitted with the codec's lock held: units reach the stream in context order.
                return handle.eventLoop.flatSubmit {
                    var last = handle.eventLoop.makeSucceededVoidFuture()
                    for unit in units {
                        last =
                            unit.compressed
                            ? handle.writeCompressedUnit(
                                unit.bytes, endMessage: unit.endsMessage, resetContext: unit.resetContext)
                            : handle.writeFiltered(unit.bytes, endMessage: unit.endsMessage)
                    }
                    return last
                }
            }
        } catch {
            handle.eventLoop.execute { handle.reset(.compressionError) }
            throw TetherError(.compression, errorCode: .compressionError, "\(error)")
        }
        try await written?.get()
    }

    /// Writes one whole message (END_MSG on its last octet).
    public func writeMessage(_ bytes: ByteBuffer) async throws {
        try await self.write(bytes, endMessage: true)
    }

    /// Half-closes: FIN after everything written (spec §6.4). Reading continues.
    public func finish() async throws {
        try await self.flush()
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

    /// Takes everything buffered (up to 1 MiB on the wire), waiting for something; credit goes
    /// back for what was taken. Empty means the peer finished. Compressed reads stay compressed:
    /// ``plain(_:)`` inflates each one as the reader reaches it.
    fileprivate func readBatch() async throws -> [TetherStreamHandle.StreamRead] {
        try await self.takeBatch()
    }

    /// The octets of one read: inflated here, in the reader's task and one frame at a time, so
    /// output stays bounded however far the data would expand (spec §9.4). A frame that breaks a
    /// limit resets the stream with COMPRESSION_ERROR.
    fileprivate func plain(_ read: TetherStreamHandle.StreamRead) async throws -> ByteBuffer {
        guard read.compression.contains(.compressed), let codec = self.handle.codec else { return read.bytes }
        do {
            return try codec.inflate(read.bytes, resetContext: read.compression.contains(.resetContext), now: .now())
        } catch {
            await self.reset(.compressionError)
            throw TetherError(.compression, errorCode: .compressionError, "\(error)")
        }
    }

    private func takeBatch() async throws -> [TetherStreamHandle.StreamRead] {
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

    /// The stream as the application reads it: inflated pieces, or on a hub's METADATA stream
    /// whole messages that passed the policy's re-check (spec/POLICY.md §7).
    struct PieceReader {
        let stream: TetherStream
        var batch: [TetherStreamHandle.StreamRead] = []
        var index = 0
        var ended = false

        /// The next piece and whether it ends a message; nil at the peer's FIN.
        mutating func next() async throws -> (bytes: ByteBuffer, endsMessage: Bool)? {
            let policy = self.stream.handle.policy.flatMap { $0.filtersInbound ? $0 : nil }
            while true {
                if self.index == self.batch.count {
                    if self.ended { return nil }
                    self.batch = try await self.stream.readBatch()
                    self.index = 0
                    if self.batch.isEmpty {
                        self.ended = true
                        policy?.endedInsideMessage()
                        return nil
                    }
                }
                let read = self.batch[self.index]
                self.index += 1
                let bytes = try await self.stream.plain(read)
                guard let policy else { return (bytes, read.endsMessage) }
                switch policy.filter(bytes, endMessage: read.endsMessage) {
                case .incomplete, .dropped: continue  // a drop is counted and audited; the stream goes on
                case .message(let message): return (message, true)
                }
            }
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
