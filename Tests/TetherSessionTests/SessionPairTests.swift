import NIOCore
import TetherWire
import Testing

@testable import TetherSession

/// Two sessions wired in memory: what one produces, the other receives.
struct SessionPair {
    var dialer: Session
    var acceptor: Session
    var now = NIODeadline.uptimeNanoseconds(0)
    private var toAcceptor = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF), expectsPreface: true)
    private var toDialer = FrameDecoder(limits: .init(maxFramePayload: 0xFF_FFFF), expectsPreface: true)
    /// Events each side reported, in order.
    var dialerEvents: [SessionEvent] = []
    var acceptorEvents: [SessionEvent] = []

    init(dialer: Settings = Settings(), acceptor: Settings = Settings()) {
        self.dialer = Session(configuration: SessionConfiguration(role: .dialer, settings: dialer), now: self.now)
        self.acceptor = Session(configuration: SessionConfiguration(role: .acceptor, settings: acceptor), now: self.now)
        self.toAcceptor.append(ByteBuffer(bytes: Preface.magic))
        self.toDialer.append(ByteBuffer(bytes: Preface.magic))
        try! self.pump()
    }

    /// Moves frames both ways until neither side has anything to send. `limit` bounds how many
    /// octets one side writes per turn, as a transport's write buffer would.
    mutating func pump(limit: Int = .max) throws {
        while true {
            let a = try Self.move(from: &self.dialer, into: &self.toAcceptor, limit: limit, now: self.now)
            let b = try Self.move(from: &self.acceptor, into: &self.toDialer, limit: limit, now: self.now)
            while let frame = try self.toAcceptor.nextFrame() {
                self.acceptorEvents += self.acceptor.receive(frame, now: self.now)
            }
            while let frame = try self.toDialer.nextFrame() {
                self.dialerEvents += self.dialer.receive(frame, now: self.now)
            }
            if a == 0 && b == 0 { return }
        }
    }

    private static func move(from session: inout Session, into decoder: inout FrameDecoder, limit: Int, now: NIODeadline)
        throws -> Int
    {
        var bytes = ByteBuffer()
        while bytes.readableBytes < limit, let produced = session.produce(into: &bytes, now: now) {
            if var payload = produced.payload { bytes.writeBuffer(&payload) }
        }
        decoder.append(bytes)
        return bytes.readableBytes
    }
}

@Suite struct SessionPairTests {
    @Test func prefaceMakesBothSidesReady() {
        let pair = SessionPair()
        #expect(pair.dialer.isActive && pair.acceptor.isActive)
        #expect(pair.dialer.version == 1 && pair.acceptor.version == 1)
    }

    @Test func bytesFlowBothWaysAndStreamsClose() throws {
        var pair = SessionPair()
        let id = try pair.dialer.openStream(.command, service: "exec", now: pair.now).get()
        _ = pair.dialer.write(id, ByteBuffer(string: "uname -a"), endMessage: true, now: pair.now)
        _ = pair.dialer.finish(id)
        try pair.pump()
        #expect(pair.acceptorEvents.contains(.data(id, ByteBuffer(string: "uname -a"), [.endMessage, .fin])))
        _ = pair.acceptor.write(id, ByteBuffer(string: "Linux"), endMessage: true, now: pair.now)
        _ = pair.acceptor.finish(id)
        try pair.pump()
        #expect(pair.dialerEvents.contains(.data(id, ByteBuffer(string: "Linux"), [.endMessage, .fin])))
        #expect(!pair.dialer.isLive(id) && !pair.acceptor.isLive(id))
    }

    /// Random operations on both sides, with a transport that takes little at a time; the peer
    /// never sees a protocol error, every byte arrives in order, and FIN comes last.
    @Test(arguments: 0..<20)
    func randomWorkloadKeepsTheProtocol(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var settings = Settings()
        settings.initialStreamCredit = 4_096
        settings.initialConnectionCredit = 16_375
        var pair = SessionPair(dialer: settings, acceptor: settings)
        var sent: [StreamID: ByteBuffer] = [:]
        var received: [StreamID: ByteBuffer] = [:]
        var finished = Set<StreamID>()
        var finSeen = Set<StreamID>()
        var streams: [StreamID] = []

        /// The acceptor's application takes everything that arrived. Returns whether anything did.
        func take() -> Bool {
            var took = false
            for event in pair.acceptorEvents {
                switch event {
                case .data(let id, let payload, let flags):
                    #expect(!finSeen.contains(id), "DATA after FIN on \(id)")
                    received[id, default: ByteBuffer()].writeImmutableBuffer(payload)
                    pair.acceptor.consume(id, octets: payload.readableBytes, now: pair.now)
                    if flags.contains(.fin) { finSeen.insert(id) }
                    took = true
                case .connectionError(let code, let reason):
                    Issue.record("acceptor failed: \(code) \(reason)")
                default:
                    break
                }
            }
            pair.acceptorEvents.removeAll()
            return took
        }

        for _ in 0..<400 {
            switch random.next() % 6 {
            case 0 where streams.count < 20:
                if case .success(let id) = pair.dialer.openStream(.bulk, service: "s", now: pair.now) {
                    streams.append(id)
                    sent[id] = ByteBuffer()
                }
            case 1, 2:
                guard let id = streams.randomElement(using: &random), !finished.contains(id) else { break }
                let bytes = ByteBuffer(
                    repeating: UInt8(truncatingIfNeeded: random.next()), count: Int(random.next() % 9_000))
                if case .success = pair.dialer.write(id, bytes, endMessage: random.next() % 2 == 0, now: pair.now) {
                    sent[id]!.writeImmutableBuffer(bytes)
                }
            case 3:
                guard let id = streams.randomElement(using: &random), !finished.contains(id) else { break }
                _ = pair.dialer.finish(id)
                finished.insert(id)
            default:
                _ = take()
                try pair.pump(limit: Int(random.next() % 20_000) + 1)
            }
        }
        // The acceptor takes all that arrives until nothing moves.
        repeat { try pair.pump() } while take()
        for id in streams {
            #expect(received[id, default: ByteBuffer()] == sent[id]!, "stream \(id)")
        }
        #expect(finSeen == finished)
        #expect(!pair.dialer.hasFailed && !pair.acceptor.hasFailed)
    }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
