import Logging
import NIOCore
import NIOPosix
import Tether
import TetherWire

/// The edge's side of a LOGS stream (spec/LOGS.md): the source's lines from the stream's cursor,
/// as messages, then — when it follows — new lines as they are written, across rotations, until
/// the plane resets the stream. File reads run on NIO's thread pool; each message waits for the
/// stream to take it, so a consumer that stalls holds the reader where it is.
enum LogFollower {
    /// How often a follow looks for new lines at the end of the file (spec/LOGS.md §3: a written
    /// line reaches the stream within 200 ms).
    static let pollInterval: Duration = .milliseconds(50)

    /// The edge's policy keeps both (PolicyEnforcer.logsKeys, spec/POLICY.md §6).
    static let cursorKey = "logs.cursor"
    static let followKey = "logs.follow"
    static let fileKey = "logs.file"

    /// Serves `handle` from `source`; the future says what was sent and how it ended, for the audit.
    static func serve(
        _ handle: TetherStreamHandle, from source: EdgeConfiguration.LogSource, logger: Logger
    ) -> EventLoopFuture<StreamSplicer.Outcome> {
        let promise = handle.eventLoop.makePromise(of: StreamSplicer.Outcome.self)
        promise.completeWithTask { await Self.follow(TetherStream(handle), source, logger: logger) }
        return promise.futureResult
    }

    private static func follow(
        _ stream: TetherStream, _ source: EdgeConfiguration.LogSource, logger: Logger
    ) async -> StreamSplicer.Outcome {
        var outcome = StreamSplicer.Outcome()
        let handle = stream.handle
        let follow = stream.metadata[Self.followKey].map { String(buffer: $0) } == "1"
        var cursor: LogCursor?
        if let text = stream.metadata[Self.cursorKey].map({ String(buffer: $0) }) {
            guard let parsed = LogCursor(text) else {
                handle.eventLoop.execute { handle.refuse(.refusedStream) }
                outcome.error = "refused: a cursor that does not parse"
                return outcome
            }
            cursor = parsed
        }
        // A glob's file: one that matches, in its directory, never through a link.
        let named = stream.metadata[Self.fileKey].map { String(buffer: $0) }
        guard let path = try? await NIOThreadPool.singleton.runIfActive({ source.file(named: named) }) else {
            handle.eventLoop.execute { handle.refuse(.unknownService) }
            outcome.error = "refused: no such file in the source"
            return outcome
        }
        let reader: LogReader
        do {
            reader = try await NIOThreadPool.singleton.runIfActive { [cursor] in try LogReader(path: path, cursor: cursor) }
        } catch {
            logger.notice("log source not readable", metadata: ["source": "\(source.name)", "error": "\(error)"])
            handle.eventLoop.execute { handle.refuse(.connectError) }
            outcome.error = "refused: \(error)"
            return outcome
        }
        handle.eventLoop.execute { handle.acknowledge() }
        do {
            var quietSince = ContinuousClock.now
            while true {
                var next = try await NIOThreadPool.singleton.runIfActive { try reader.next() }
                if next == nil && follow && ContinuousClock.now - quietSince >= LogMessage.idleInterval {
                    next = .idle(reader.position)
                }
                if let message = next {
                    let encoded = message.encoded()
                    try await stream.writeMessage(encoded)
                    outcome.toStream += encoded.readableBytes
                    quietSince = ContinuousClock.now
                    continue
                }
                guard follow else {
                    try await stream.finish()
                    return outcome
                }
                // The plane ends a follow by resetting the stream.
                if try await handle.eventLoop.submit({ handle.failure != nil }).get() {
                    outcome.error = "reset by the plane"
                    return outcome
                }
                try await Task.sleep(for: Self.pollInterval)
            }
        } catch {
            outcome.error = "\(error)"
            handle.eventLoop.execute { handle.reset(.cancel) }
            return outcome
        }
    }
}
