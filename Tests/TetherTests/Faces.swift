import NIOCore
import Tether
import TetherWire
import Testing

/// The two faces of one stream object: the event loop's (``TetherStreamHandle``, what relays use)
/// and the async one (``TetherStream``). Stream tests run on both, so a feature cannot live in
/// one face only.
enum Face: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case eventLoop
    case async

    var testDescription: String { self.rawValue }

    /// Every transport with every face.
    static let all: [(Transport, Face)] = Transport.allCases.flatMap { transport in Face.allCases.map { (transport, $0) } }

    func write(_ stream: TetherStream, _ bytes: ByteBuffer, endMessage: Bool = false) async throws {
        switch self {
        case .async:
            try await stream.write(bytes, endMessage: endMessage)
        case .eventLoop:
            let handle = stream.handle
            try await handle.eventLoop.flatSubmit { handle.write(bytes, endMessage: endMessage) }.get()
        }
    }

    func flush(_ stream: TetherStream) async throws {
        switch self {
        case .async:
            try await stream.flush()
        case .eventLoop:
            let handle = stream.handle
            try await handle.eventLoop.submit { handle.flush() }.get()
        }
    }

    func finish(_ stream: TetherStream) async throws {
        switch self {
        case .async:
            try await stream.finish()
        case .eventLoop:
            let handle = stream.handle
            try await handle.eventLoop.flatSubmit { handle.finish() }.get()
        }
    }

    /// Everything the peer sends until its FIN, joined.
    func readAll(_ stream: TetherStream) async throws -> ByteBuffer {
        switch self {
        case .async:
            var all = ByteBuffer()
            for try await var chunk in stream.chunks { all.writeBuffer(&chunk) }
            return all
        case .eventLoop:
            var all = ByteBuffer()
            for var read in try await Self.readToEnd(stream) { all.writeBuffer(&read.bytes) }
            return all
        }
    }

    /// Whole messages until FIN.
    func messages(_ stream: TetherStream) async throws -> [ByteBuffer] {
        switch self {
        case .async:
            var messages: [ByteBuffer] = []
            for try await message in stream.messages() { messages.append(message) }
            return messages
        case .eventLoop:
            var messages: [ByteBuffer] = []
            var current: ByteBuffer?
            for var piece in try await Self.readToEnd(stream) {
                if current == nil { current = piece.bytes } else { current!.writeBuffer(&piece.bytes) }
                if piece.endsMessage {
                    messages.append(current!)
                    current = nil
                }
            }
            return messages
        }
    }

    /// Everything the peer sends until the stream fails, joined, and the failure (nil at FIN).
    func readUntilFailure(_ stream: TetherStream) async -> (ByteBuffer, TetherError?) {
        switch self {
        case .async:
            var all = ByteBuffer()
            do {
                for try await var chunk in stream.chunks { all.writeBuffer(&chunk) }
                return (all, nil)
            } catch {
                return (all, error as? TetherError)
            }
        case .eventLoop:
            let handle = stream.handle
            let promise = handle.eventLoop.makePromise(of: (ByteBuffer, TetherError?).self)
            handle.eventLoop.execute {
                var all = ByteBuffer()
                func step() {
                    while var read = handle.read() {
                        all.writeBuffer(&read.bytes)
                        handle.consumed(read.wireOctets)
                    }
                    if handle.failure != nil || handle.isReadEnded {
                        handle.onReadable = nil
                        promise.succeed((all, handle.failure))
                    }
                }
                handle.onReadable = step
                step()
            }
            return try! await promise.futureResult.get()
        }
    }

    /// Reads a stream to its end on the event loop, as a relay does.
    static func readToEnd(_ stream: TetherStream) async throws -> [TetherStreamHandle.StreamRead] {
        let handle = stream.handle
        return try await handle.eventLoop.flatSubmit { Self.readToEnd(handle) }.get()
    }

    /// Reads a handle to its end on the event loop, as a relay does: as data arrives, returning
    /// credit for each piece as it is taken.
    static func readToEnd(_ handle: TetherStreamHandle) -> EventLoopFuture<[TetherStreamHandle.StreamRead]> {
        let promise = handle.eventLoop.makePromise(of: [TetherStreamHandle.StreamRead].self)
        var reads: [TetherStreamHandle.StreamRead] = []
        func step() {
            while let read = handle.read() {
                reads.append(read)
                handle.consumed(read.wireOctets)
            }
            if let failure = handle.failure {
                handle.onReadable = nil
                return promise.fail(failure)
            }
            if handle.isReadEnded {
                handle.onReadable = nil
                return promise.succeed(reads)
            }
        }
        handle.onReadable = step
        step()
        return promise.futureResult
    }
}
