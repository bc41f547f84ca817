// libFuzzer target: the session state machine (spec §6–§12). See fuzz/README.md.
//
// The input is a script: the first octet picks the role, then each octet is an operation — a
// frame from the peer (built from the octets that follow, or decoded raw from them), or an
// application call (open, write, consume, accept, finish, reset, refuse, GOAWAY), or time passing,
// or the transport taking what the session produces.
// Invariants after every step (`Session.brokenInvariant`): credit never negative or exceeded, no
// stream both live and closed, the peer never holds more streams than granted, every queue the
// peer can grow bounded, window growth accounted, no timer lost. After every tick the next
// deadline is later than now, and a tick before it does nothing. And nothing traps.
import NIOCore
import TetherSession
import TetherWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSession(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 1 else { return 0 }
    var script = Script(UnsafeRawBufferPointer(start: data, count: size))
    // The first octet: bit 0 the role; bits 1–7 switch on per-stream idle timers, short enough
    // for the fuzzer's clock to reach.
    let first = script.next()
    let role: Role = first & 1 == 0 ? .dialer : .acceptor
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var settings = Settings()
    settings.initialStreamCredit = 4_096
    settings.initialConnectionCredit = 16_384
    settings.initialStreams = PerClass(4)
    var configuration = SessionConfiguration(role: role, settings: settings)
    if first & 2 != 0 { configuration.idleTimeout = .seconds(Int64(first >> 4) + 1) }
    if first & 4 != 0 { configuration.halfCloseTimeout = .seconds(Int64(first >> 5) + 1) }
    configuration.windowTuning.pool = WindowPool(capacity: 1 << 30)
    var session = Session(configuration: configuration, now: now)
    // The peer's ids have the other parity (spec §6.1).
    func peerID(_ k: UInt8) -> StreamID { StreamID(UInt32(k) * 2 + (role == .dialer ? 2 : 1)) }
    var live: [StreamID] = []

    func check(_ step: String) {
        if let broken = session.brokenInvariant() { preconditionFailure("after \(step): \(broken)") }
    }
    func note(_ events: SessionEvents) {
        for event in events {
            switch event {
            case .opened(let inbound): live.append(inbound.id)
            case .reset(let id, _): live.removeAll { $0 == id }
            default: break
            }
        }
    }

    // The peer's preface, most of the time.
    if script.next() & 7 != 0 { note(session.receive(.settings(.values(Settings().entries)), now: now)) }
    while !script.isEmpty {
        let operation = script.next()
        let pick = script.next()
        let stream = live.isEmpty ? peerID(pick % 16) : live[Int(pick) % live.count]
        switch operation % 16 {
        case 0:  // DATA from the peer
            var flags: DataFrame.Flags = []
            let bits = script.next()
            if bits & 1 != 0 { flags.insert(.fin) }
            if bits & 2 != 0 { flags.insert(.endMessage) }
            let payload = ByteBuffer(repeating: 0x61, count: Int(script.next()) * 64)
            note(session.receive(.data(DataFrame(streamID: stream, flags: flags, payload: payload)), now: now))
        case 1:  // OPEN from the peer
            let id = peerID(script.next())
            let streamClass = StreamClass(rawValue: script.next() % 4) ?? .bulk
            note(session.receive(.open(OpenFrame(streamID: id, streamClass: streamClass, service: "s")), now: now))
        case 2:  // RESET from the peer
            let finalSize = UInt64(script.next()) * 64
            note(session.receive(.reset(ResetFrame(streamID: stream, code: .cancel, finalSize: finalSize)), now: now))
        case 3:  // CREDIT from the peer
            let limit = UInt64(script.next()) << UInt64(script.next() % 24)
            let frame: CreditFrame
            switch script.next() % 3 {
            case 0: frame = .stream(stream, limit: limit)
            case 1: frame = .connection(limit: limit)
            default: frame = .streams(StreamClass(rawValue: script.next() % 4) ?? .bulk, count: UInt32(limit & 0xFFFF))
            }
            note(session.receive(.credit(frame), now: now))
        case 4:  // PING, GOAWAY, SETTINGS ACK or an unknown frame from the peer
            switch script.next() % 4 {
            case 0: note(session.receive(.ping(PingFrame(ack: script.next() & 1 == 0, opaque: UInt64(script.next()))), now: now))
            case 1: note(session.receive(.goAway(GoAwayFrame(lastStreamID: StreamID(UInt32(script.next())), code: .noError)), now: now))
            case 2: note(session.receive(.settings(.ack), now: now))
            default:
                let unknown = UnknownFrame(type: FrameType(rawValue: 0x40), flags: 0, streamID: stream, payload: ByteBuffer())
                note(session.receive(.unknown(unknown), now: now))
            }
        case 5:  // raw octets through the decoder
            var decoder = FrameDecoder()
            decoder.append(ByteBuffer(bytes: script.take(Int(script.next()))))
            while let frame = try? decoder.nextFrame() { note(session.receive(frame, now: now)) }
        case 6:  // the application opens a stream
            if case .success(let id) = session.openStream(
                StreamClass(rawValue: script.next() % 4) ?? .bulk, service: "svc", now: now)
            {
                live.append(id)
            }
        case 7:  // the application writes
            _ = session.write(stream, ByteBuffer(repeating: 0x62, count: Int(script.next()) * 32), endMessage: script.next() & 1 == 0, now: now)
        case 8:  // the application takes what arrived
            session.consume(stream, octets: Int(script.next()) * 64, now: now)
        case 9:
            session.accept(stream)
        case 10:
            _ = session.finish(stream)
        case 11:
            session.reset(stream, code: .cancel)
            live.removeAll { $0 == stream }
        case 12:
            note(session.refuse(stream, code: .refusedStream, now: now))
        case 13:
            session.goAway(now: now)
        case 14:  // time passes
            let step = TimeAmount.milliseconds(Int64(script.next()) * 40)
            // A tick before the next deadline does nothing and leaves the deadline as it was.
            if let deadline = session.nextDeadline, now + step < deadline {
                var early = session
                if !early.tick(now: now + step).isEmpty || early.nextDeadline != deadline {
                    preconditionFailure("a tick before the deadline \(deadline) did something")
                }
            }
            now = now + step
            note(session.tick(now: now))
            // spec §6.4, §12: a deadline at or before now would make the handler's timer spin.
            if let deadline = session.nextDeadline, deadline <= now {
                preconditionFailure("after tick(now: \(now)) the next deadline is \(deadline)")
            }
        default:  // the transport takes what the session produces
            var output = ByteBuffer()
            var budget = Int(script.next()) + 1
            while budget > 0, session.produce(into: &output, now: now, room: 16_384) != nil {
                budget -= 1
                output.clear()
            }
        }
        check("operation \(operation % 16)")
    }
    return 0
}

/// The fuzzer's octets, taken one at a time (zero once they run out).
struct Script {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var isEmpty: Bool { self.index >= self.bytes.count }

    mutating func next() -> UInt8 {
        guard self.index < self.bytes.count else { return 0 }
        defer { self.index += 1 }
        return self.bytes[self.index]
    }

    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(self.bytes.count, self.index + count)
        defer { self.index = end }
        return Array(self.bytes[self.index..<end])
    }
}
