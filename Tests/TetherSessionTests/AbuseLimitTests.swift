import NIOCore
import TetherTestSupport
import TetherWire
import Testing

@testable import TetherSession

/// spec §12 with a manual clock: each abuse limit trips exactly past its budget, ends the
/// connection with GOAWAY ENHANCE_YOUR_CALM and names itself; within the refill rate it never trips.
@Suite struct AbuseLimitTests {
    /// An acceptor whose peer (the test) sent its SETTINGS.
    struct Peer {
        var session: Session
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var nextStream: UInt32 = 1

        init(peer: Settings = Settings(), _ configure: (inout SessionConfiguration) -> Void = { _ in }) {
            var configuration = SessionConfiguration(role: .acceptor, settings: Settings())
            configuration.windowTuning.enabled = false  // no RTT PINGs of ours in the way
            configure(&configuration)
            self.session = Session(configuration: configuration, now: self.now)
            _ = self.session.receive(.settings(.values(peer.entries)), now: self.now)
        }

        /// Sends `frame`; returns the connection error it caused, if any.
        mutating func send(_ frame: Frame) -> ErrorCode? {
            for event in self.session.receive(frame, now: self.now) {
                if case .connectionError(let code, _) = event { return code }
            }
            return nil
        }

        mutating func open(_ streamClass: StreamClass = .bulk) -> StreamID {
            let id = StreamID(self.nextStream)
            self.nextStream += 2
            precondition(self.send(.open(OpenFrame(streamID: id, streamClass: streamClass, service: "s"))) == nil)
            return id
        }

        /// The frames the session would write now.
        mutating func written() -> [Frame] {
            self.session.producedFrames(now: self.now)
        }

        /// Sends `frame` `count` times; returns how many went in before a connection error, and it.
        mutating func repeatedly(_ count: Int, every gap: TimeAmount = .zero, _ frame: (inout Peer) -> Frame) -> (Int, ErrorCode?) {
            for index in 0..<count {
                self.now = self.now + gap
                let next = frame(&self)
                if let error = self.send(next) { return (index, error) }
            }
            return (count, nil)
        }

        mutating func expectGoAway(_ limit: AbuseLimit) {
            #expect(self.session.trippedLimit == limit)
            #expect(self.written().contains {
                if case .goAway(let goAway) = $0 { return goAway.code == .enhanceYourCalm }
                return false
            })
        }
    }

    @Test func rapidResetTripsPastItsBurstButNotAtItsRate() {
        var peer = Peer()
        let (accepted, error) = peer.repeatedly(1_000) { peer in
            let id = peer.open()
            return .reset(ResetFrame(streamID: id, code: .cancel, finalSize: 0))
        }
        #expect(accepted == 500)
        #expect(error == .enhanceYourCalm)
        peer.expectGoAway(.resetRate)

        var patient = Peer()
        // 40 per second, under the 50/s refill: thousands go through.
        let (all, none) = patient.repeatedly(3_000, every: .milliseconds(25)) { peer in
            .reset(ResetFrame(streamID: peer.open(), code: .cancel, finalSize: 0))
        }
        #expect(all == 3_000)
        #expect(none == nil)
    }

    @Test func resetsWeAreProvokedIntoCountToo() {
        var peer = Peer()
        var tripped: SessionEvents?
        for _ in 0..<600 {
            let id = peer.open()
            let events = peer.session.refuse(id, code: .unknownService, now: peer.now)
            if !events.isEmpty {
                tripped = events
                break
            }
        }
        #expect(tripped != nil)
        #expect(peer.session.counters.resetsSent == 501)
        peer.expectGoAway(.resetRate)
    }

    /// A client retrying against a backend that is down: 2,000 opens at 100 per second, each
    /// refused with CONNECT_ERROR — our own state, not the peer's fault — keep the connection up.
    /// Counted, they would have tripped the reset rate after about ten seconds.
    @Test(arguments: [ErrorCode.connectError, .refusedStream])
    func refusalsForOurOwnStateNeverCount(_ code: ErrorCode) {
        var peer = Peer()
        for _ in 0..<2_000 {
            peer.now = peer.now + .milliseconds(10)
            let id = peer.open()
            #expect(peer.session.refuse(id, code: code, now: peer.now).isEmpty)
        }
        #expect(peer.session.counters.resetsSent == 2_000)
        #expect(peer.session.trippedLimit == nil)
        #expect(peer.session.isActive)
    }

    /// spec §10.2 step 3: OPENs that arrive after our GOAWAY are refused with REFUSED_STREAM,
    /// which does not count against the peer — it had not seen the GOAWAY yet.
    @Test func opensRefusedWhileDrainingNeverCount() {
        var peer = Peer()
        peer.session.goAway(now: peer.now)
        // The drain's announcement is acknowledged: from here on OPENs are refused.
        for case .ping(let ping) in peer.written() { #expect(peer.send(.ping(PingFrame(ack: true, opaque: ping.opaque))) == nil) }
        for _ in 0..<2_000 { _ = peer.open() }
        #expect(peer.session.counters.resetsSent == 2_000)
        #expect(peer.session.trippedLimit == nil)
    }

    /// The other side of the same exchange: the peer refusing or cancelling streams *we* opened
    /// never counts toward its reset rate — there are no more of those than we chose to open.
    @Test func resetsOfOurOwnStreamsNeverCount() {
        var peer = Peer()
        for index in 0..<2_000 {
            if index % 200 == 0 {
                #expect(peer.send(.credit(.streams(.command, count: UInt32(index + 256)))) == nil)
            }
            guard case .success(let id) = peer.session.openStream(.command, service: "down", now: peer.now) else {
                Issue.record("open \(index) failed")
                return
            }
            _ = peer.written()
            #expect(peer.send(.reset(ResetFrame(streamID: id, code: .connectError, finalSize: 0))) == nil)
        }
        #expect(peer.session.counters.resetsReceived == 2_000)
        #expect(peer.session.trippedLimit == nil)
    }

    /// The same rate of opens to a service that does not exist, or that the policy forbids, is
    /// stopped: the peer is asking for what it may not have.
    @Test(arguments: [ErrorCode.unknownService, .policyDenied])
    func refusalsOfWhatThePeerAskedForAreStoppedAtTheResetRate(_ code: ErrorCode) {
        var peer = Peer()
        var refused = 0
        for _ in 0..<2_000 {
            peer.now = peer.now + .milliseconds(10)
            let id = peer.open()
            if !peer.session.refuse(id, code: code, now: peer.now).isEmpty { break }
            refused += 1
        }
        // 500 of burst, then 50/s refilled against 100/s: the budget is spent after about 10 s.
        #expect((990...1_010).contains(refused), "\(refused) refusals before the limit")
        peer.expectGoAway(.resetRate)
    }

    @Test func aRunOfEmptyFramesTrips() {
        var peer = Peer()
        let id = peer.open()
        let empty = Frame.data(DataFrame(streamID: id, payload: ByteBuffer()))
        // 100 empty frames are allowed; one that carries something ends the run.
        #expect(peer.repeatedly(100) { _ in empty }.1 == nil)
        #expect(peer.send(.data(DataFrame(streamID: id, payload: ByteBuffer(string: "x")))) == nil)
        #expect(peer.repeatedly(100) { _ in empty }.1 == nil)
        #expect(peer.send(empty) == .enhanceYourCalm)
        peer.expectGoAway(.emptyFrames)

        // A CREDIT that raises nothing is empty too.
        var credits = Peer()
        let (count, error) = credits.repeatedly(200) { _ in .credit(.connection(limit: UInt64(Settings().initialConnectionCredit))) }
        #expect(count == 100)
        #expect(error == .enhanceYourCalm)
        credits.expectGoAway(.emptyFrames)
    }

    @Test(arguments: ["unknown", "ping", "unmatched-ack", "small-credit"])
    func glitchesSpendABudgetThatRefills(_ kind: String) {
        func frame(_ peer: inout Peer) -> Frame {
            switch kind {
            case "unknown":
                return .unknown(UnknownFrame(type: FrameType(rawValue: 0x42), flags: 0, streamID: .connection, payload: ByteBuffer()))
            case "ping":
                _ = peer.written()  // a peer that reads: only the glitch budget is tested
                return .ping(PingFrame(ack: false, opaque: 7))
            case "unmatched-ack":
                return .ping(PingFrame(ack: true, opaque: 0xDEAD))
            default:
                let current = peer.session.connectionSend.limit
                return .credit(.connection(limit: current + 1))
            }
        }
        var flood = Peer()
        let (accepted, error) = flood.repeatedly(5_000) { frame(&$0) }
        #expect(accepted == 1_000)
        #expect(error == .enhanceYourCalm)
        flood.expectGoAway(.glitches)

        var steady = Peer()
        // 80 per second, under the 100/s refill.
        #expect(steady.repeatedly(3_000, every: .milliseconds(12)) { frame(&$0) }.1 == nil)
    }

    /// spec §7.2, §12: a peer with a window smaller than 2 KiB renews it in raises under 1,024
    /// octets. Raises of half its window or more — the whole window, as an independent
    /// implementation does — are not glitches however many there are; smaller ones are.
    @Test(arguments: [(UInt64(1_000), true), (500, true), (499, false)])
    func aSmallWindowRenewedByHalfOrMoreIsNoGlitch(_ raise: UInt64, _ allowed: Bool) {
        var settings = Settings()
        settings.initialStreamCredit = 1_000
        var peer = Peer(peer: settings)
        guard case .success(let id) = peer.session.openStream(.bulk, service: "sink", now: peer.now) else {
            Issue.record("open failed")
            return
        }
        _ = peer.session.write(id, ByteBuffer(repeating: 0x61, count: 4 << 20), now: peer.now)
        var limit: UInt64 = 1_000
        let (renewals, error) = peer.repeatedly(5_000) { peer in
            _ = peer.written()  // it sends up to the limit, then waits for the next CREDIT
            limit += raise
            return .credit(.stream(id, limit: limit))
        }
        if allowed {
            #expect(renewals == 5_000)
            #expect(error == nil)
        } else {
            #expect(renewals == 1_000)
            peer.expectGoAway(.glitches)
        }
    }

    @Test func framesOnForgottenStreamsAreGlitches() {
        var peer = Peer { $0.rememberedClosedStreams = 1 }
        let first = peer.open()
        let second = peer.open()
        _ = peer.send(.reset(ResetFrame(streamID: first, code: .cancel, finalSize: 0)))
        _ = peer.send(.reset(ResetFrame(streamID: second, code: .cancel, finalSize: 0)))  // forgets `first`
        let before = peer.session.counters.glitches
        _ = peer.send(.reset(ResetFrame(streamID: first, code: .cancel, finalSize: 0)))
        _ = peer.send(.credit(.stream(first, limit: 1 << 20)))
        _ = peer.send(.data(DataFrame(streamID: first, payload: ByteBuffer(string: "late"))))
        #expect(peer.session.counters.glitches == before + 3)
        _ = peer.send(.credit(.stream(second, limit: 1 << 20)))  // remembered: not a glitch
        #expect(peer.session.counters.glitches == before + 3)
    }

    @Test func aPeerThatDoesNotReadCannotQueueControlFramesWithoutBound() {
        var peer = Peer {
            $0.abuseLimits.controlQueue = 64
            $0.abuseLimits.glitches = TokenBucket(burst: 1_000_000, perSecond: 0)
        }
        _ = peer.written()
        // Each PING asks for an ACK that is never written: the peer does not read.
        let (accepted, error) = peer.repeatedly(1_000) { _ in .ping(PingFrame(ack: false, opaque: 1)) }
        #expect(accepted == 64)
        #expect(error == .enhanceYourCalm)
        peer.expectGoAway(.controlQueue)
    }

    @Test func aPeerThatSendsNoPrefaceIsCutOff() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var session = Session(configuration: SessionConfiguration(role: .acceptor), now: start)
        #expect(session.nextDeadline == start + .seconds(10))
        #expect(session.tick(now: start + .seconds(9)).isEmpty)
        let events = session.tick(now: start + .seconds(10))
        #expect(events.contains {
            if case .connectionError(.enhanceYourCalm, _) = $0 { return true }
            return false
        })
        #expect(session.trippedLimit == .preface)
    }

    @Test func aStreamWithNoDataEitherWayTimesOutWhenAnIdleTimeoutIsSet() {
        var peer = Peer { $0.idleTimeout = .seconds(5) }
        let quiet = peer.open()
        let busy = peer.open()
        peer.session.accept(quiet)
        peer.session.accept(busy)
        peer.now = peer.now + .seconds(3)
        #expect(peer.send(.data(DataFrame(streamID: busy, payload: ByteBuffer(string: "still here")))) == nil)
        peer.now = peer.now + .seconds(2)
        var timedOut: [StreamID] = []
        for event in peer.session.tick(now: peer.now) {
            if case .reset(let id, .timeout) = event { timedOut.append(id) }
        }
        #expect(timedOut == [quiet])
        #expect(peer.written().contains { $0 == .reset(ResetFrame(streamID: quiet, code: .timeout, finalSize: 0)) })
    }

    @Test func theStreamCountIsEnforcedPerClass() {
        var peer = Peer()
        let granted = Settings().initialStreams[.command]
        for _ in 0..<granted { _ = peer.open(.command) }
        let id = StreamID(peer.nextStream)
        #expect(peer.send(.open(OpenFrame(streamID: id, streamClass: .command, service: "s"))) == .streamLimitError)
    }
}
