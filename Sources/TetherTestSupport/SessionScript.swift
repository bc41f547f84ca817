import NIOCore
import TetherSession
import TetherWire

/// Runs one session script from `spec/vectors/sessions/` (grammar in its README) against a real
/// ``Session`` and returns every difference between what the script expects and what happened.
/// `@unchecked Sendable`: `fields` is an immutable JSON tree from `JSONSerialization`.
public struct SessionScript: @unchecked Sendable {
    public let file: String
    public let name: String
    let fields: [String: Any]

    public init(file: String, fields: [String: Any]) throws {
        self.file = file
        self.name = try fields.string("name")
        self.fields = fields
    }

    public static func all() throws -> [SessionScript] {
        try Vectors.sessionScripts().map { try SessionScript(file: $0.file, fields: $0.script) }
    }

    /// Runs the script; an empty result means the session did exactly what the script says.
    public func run() throws -> [String] {
        let role: Role = try self.fields.string("role") == "dialer" ? .dialer : .acceptor
        let local = try VectorFrame.settings(self.fields["local_settings"] as? [String: Any])
        let peer = try VectorFrame.settings(self.fields["peer_settings"] as? [String: Any])
        // Window tuning is receiver-local (spec §7.4): scripts pin windows to their initial size
        // unless they say `window_tuning`, with a pool of their own.
        let tuning = self.fields["window_tuning"] as? Bool ?? false
        var configuration = SessionConfiguration(role: role, settings: local)
        configuration.windowTuning = .disabled
        if tuning {
            configuration.windowTuning = WindowTuning()
            configuration.windowTuning.pool = WindowPool(capacity: 1 << 30)
        }
        var harness = Harness(session: Session(configuration: configuration, now: .uptimeNanoseconds(0)))
        var failures: [String] = []

        // What the session announces: the script's settings, with an acceptor's instance id (§3.3).
        let preface = harness.drain()
        if preface != [Output.send(.settings(.values(configuration.settings.entries))).description] {
            failures.append("preface: expected our SETTINGS, got \(preface)")
        }
        if self.fields["preface"] as? Bool ?? true {
            let ready = harness.step { $0.receive(.settings(.values(peer.entries)), now: $1) }
            var expected = [Output.event(.ready(peer: peer)).description, Output.send(.settings(.ack)).description]
            // A tuning endpoint takes its first RTT sample now (spec §7.4 step 1): PING 1.
            if tuning { expected.append(Output.send(.ping(PingFrame(ack: false, opaque: 1))).description) }
            if ready != expected { failures.append("preface: expected \(expected), got \(ready)") }
            let ack = harness.step { $0.receive(.settings(.ack), now: $1) }
            if !ack.isEmpty { failures.append("preface ACK: expected nothing, got \(ack)") }
        }

        for (number, step) in try self.fields.array("steps").enumerated() {
            var appFailure: String?
            let actual = try harness.step { session, now in
                try Self.perform(step, on: &session, now: now, failure: &appFailure)
            } advancing: { step["advance_ms"] as? Int }
            if let appFailure { failures.append("step \(number + 1): \(appFailure)") }
            // spec §6.4, §12: after time passes, no deadline is left in the past.
            if step["advance_ms"] != nil, let deadline = harness.session.nextDeadline, deadline <= harness.now {
                failures.append("step \(number + 1): the next deadline \(deadline) is not after now, \(harness.now)")
            }
            let expected = try (step["expect"] as? [[String: Any]] ?? []).enumerated().map { index, output in
                try Self.describe(expected: output, matching: index < actual.count ? actual[index] : nil)
            }
            if actual != expected {
                failures.append(
                    "step \(number + 1): expected \(expected.map(Self.short)), got \(actual.map(Self.short))")
            }
        }
        return failures
    }

    /// Performs a step's `recv` or `app` action. Advancing the clock is done by the harness.
    private static func perform(
        _ step: [String: Any], on session: inout Session, now: NIODeadline, failure: inout String?
    ) throws -> SessionEvents {
        if let recv = step["recv"] as? [String: Any] {
            return session.receive(try VectorFrame.frame(recv), now: now)
        }
        if step["advance_ms"] != nil {
            return session.tick(now: now)
        }
        let action = try step.string("app")
        let stream = StreamID(UInt32(step["stream"] as? Int ?? 0))
        let result = step["result"] as? [String: Any]
        switch action {
        case "open":
            let opened = session.openStream(
                try VectorFrame.streamClass(step.string("class")),
                service: try step.string("service"),
                compression: CompressionAlgorithm(rawValue: UInt8(step["compression"] as? Int ?? 0)),
                now: now)
            let actual: String =
                switch opened {
                case .success(let id): "stream \(id)"
                case .failure(.noCredit): "error no_credit"
                case .failure(.draining): "error draining"
                case .failure(.compressionUnsupported): "error compression"
                case .failure(.invalid): "error invalid"
                case .failure(let other): "error \(other)"
                }
            let expected = (result?["stream"] as? Int).map { "stream \($0)" } ?? "error \(result?["error"] ?? "?")"
            if actual != expected { failure = "open: expected \(expected), got \(actual)" }
        case "write":
            let payload = try VectorFrame.payload(step)
            let endMessage = step["end_msg"] as? Bool ?? false
            let written =
                step["compressed"] as? Bool == true
                ? session.writeCompressed(stream, payload, endMessage: endMessage, now: now)
                : session.write(stream, payload, endMessage: endMessage, now: now)
            let expectClosed = result?["error"] as? String == "closed"
            if case .failure = written, !expectClosed { failure = "write failed" }
            if case .success = written, expectClosed { failure = "write succeeded on a closed stream" }
        case "finish":
            if case .failure = session.finish(stream) { failure = "finish failed" }
        case "reset":
            session.reset(stream, code: try VectorFrame.errorCode(step["code"]))
        case "refuse":
            session.refuse(stream, code: try VectorFrame.errorCode(step["code"]), now: now)
        case "accept":
            session.accept(stream)
        case "acknowledge":
            session.acknowledge(stream)
        case "consume":
            session.consume(stream, octets: try step.int("bytes"), now: now)
        case "goaway":
            session.goAway(now: now)
        default:
            throw VectorError("unknown app action \(action)")
        }
        return .none
    }

    /// The canonical text of an expected output; wildcards (a PING's payload, a GOAWAY's debug
    /// text) take the actual output's value.
    private static func describe(expected output: [String: Any], matching actual: String?) throws -> String {
        if let code = output["error"] {
            return "error \(try VectorFrame.errorCode(code).name)"
        }
        if let send = output["send"] as? [String: Any] {
            var frame = try VectorFrame.frame(send)
            if let actual, let actualFrame = Output.decodeSend(actual) {
                switch (frame, actualFrame) {
                case (.ping(var ping), .ping(let other)) where send["opaque"] == nil:
                    ping.opaque = other.opaque
                    frame = .ping(ping)
                case (.goAway(var goAway), .goAway(let other)) where send["debug"] == nil:
                    goAway.debug = other.debug
                    frame = .goAway(goAway)
                default:
                    break
                }
            }
            return Output.send(frame).description
        }
        let stream = StreamID(UInt32(output["stream"] as? Int ?? 0))
        switch try output.string("event") {
        case "ready": return "ready"
        case "drained": return Output.drained.description
        case "opened":
            return Output.event(
                .opened(
                    InboundStream(
                        id: stream, streamClass: try VectorFrame.streamClass(output.string("class")),
                        service: try output.string("service"), metadata: OpenMetadata(),
                        compression: CompressionAlgorithm(rawValue: UInt8(output["compression"] as? Int ?? 0))))
            ).description
        case "data":
            guard case .data(let data) = try VectorFrame.frame(output.merging(["type": "DATA"]) { $1 }) else {
                throw VectorError("bad data event")
            }
            return Output.event(.data(stream, data.payload, data.flags)).description
        case "reset":
            return Output.event(.reset(stream, try VectorFrame.errorCode(output["code"]))).description
        case "goaway":
            return Output.event(
                .goAway(
                    GoAwayFrame(
                        lastStreamID: StreamID(UInt32(try output.int("last_stream"))),
                        code: try VectorFrame.errorCode(output["code"]))
                )
            ).description
        case "stream_credit":
            return Output.event(.streamCredit(try VectorFrame.streamClass(output.string("class")))).description
        case "acknowledged":
            return Output.event(.acknowledged(stream)).description
        case let other:
            throw VectorError("unknown event \(other)")
        }
    }

    private static func short(_ text: String) -> String {
        text.count > 160 ? String(text.prefix(160)) + "…" : text
    }
}

/// Drives a session through one step and collects its outputs in canonical text form.
private struct Harness {
    var session: Session
    var now = NIODeadline.uptimeNanoseconds(0)

    mutating func step(
        _ body: (inout Session, NIODeadline) throws -> SessionEvents,
        advancing: () -> Int? = { nil }
    ) rethrows -> [String] {
        if let milliseconds = advancing() { self.now = self.now + .milliseconds(Int64(milliseconds)) }
        let wasDrained = self.session.isDrained
        var outputs = try body(&self.session, self.now).map { event -> String in
            if case .connectionError(let code, _) = event { return "error \(code.name)" }
            return Output.event(event).description
        }
        outputs += self.drain()
        if !wasDrained && self.session.isDrained { outputs.append(Output.drained.description) }
        return outputs
    }

    /// Everything the session would send now, one frame per entry.
    mutating func drain() -> [String] {
        self.session.producedFrames(now: self.now).map { Output.send($0).description }
    }
}

/// One observable output, printed canonically so expected and actual compare as text.
private enum Output: CustomStringConvertible {
    case send(Frame)
    case event(SessionEvent)
    case drained

    var description: String {
        switch self {
        case .send(let frame):
            var bytes = ByteBuffer()
            bytes.writeFrame(frame)
            return "send \(bytes.hexString)"
        case .drained:
            return "drained"
        case .event(let event):
            switch event {
            case .ready: return "ready"
            case .opened(let stream):
                return "opened \(stream.id) \(stream.streamClass.name) \(stream.service) \(stream.compression.rawValue)"
            case .acknowledged(let id): return "acknowledged \(id)"
            case .data(let id, let payload, let flags): return "data \(id) flags=\(flags.rawValue) \(payload.hexString)"
            case .reset(let id, let code): return "reset \(id) \(code.name)"
            case .goAway(let goAway): return "goaway \(goAway.lastStreamID) \(goAway.code.name)"
            case .streamCredit(let streamClass): return "stream_credit \(streamClass.name)"
            case .pong(let opaque, _): return "pong \(opaque)"
            case .connectionError(let code, _): return "error \(code.name)"
            }
        }
    }

    static func decodeSend(_ text: String) -> Frame? {
        guard text.hasPrefix("send "), let bytes = try? ByteBuffer(hex: String(text.dropFirst(5))) else { return nil }
        var decoder = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF))
        decoder.append(bytes)
        return try? decoder.nextFrame()
    }
}

extension Session {
    /// Everything the session would send now, decoded: what a transport that always has room
    /// would write.
    public mutating func producedFrames(now: NIODeadline) -> [Frame] {
        var bytes = ByteBuffer()
        while let produced = self.produce(into: &bytes, now: now) {
            if var payload = produced.payload { bytes.writeBuffer(&payload) }
        }
        var decoder = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF))
        decoder.append(bytes)
        var frames: [Frame] = []
        while let frame = try? decoder.nextFrame() { frames.append(frame) }
        return frames
    }
}
