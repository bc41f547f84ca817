import NIOCore
import TetherWire
import Testing

@testable import TetherSession

/// The session's timers with a manual clock (spec §6.4, §7.4, §10.1, §12): a deadline is never in
/// the past after a tick, a tick before the deadline does nothing, and per-stream timers are idle
/// timers.
@Suite struct TimerTests {
    typealias Harness = WindowTuningTests.Harness
    static let initial = WindowTuningTests.initial
    /// The half-close tests let the peer be silent for minutes: no keepalive in the way.
    static let noKeepalive: Settings = {
        var settings = Settings()
        settings.keepaliveIntervalMilliseconds = 0
        return settings
    }()

    /// Ticks whenever the session asks to, as the channel handler's timer does, up to `end`;
    /// checks the rule the handler depends on after every tick. Returns how many ticks ran.
    @discardableResult
    static func runTimers(_ session: inout Session, from start: NIODeadline, until end: NIODeadline) -> Int {
        var ticks = 0
        var now = start
        while let deadline = session.nextDeadline, deadline <= end {
            now = max(now, deadline)
            _ = session.tick(now: now)
            ticks += 1
            if let next = session.nextDeadline {
                #expect(next > now, "after tick(now: \(now)) the next deadline \(next) is not later")
                if next <= now { break }  // the handler would spin here
            }
        }
        return ticks
    }

    /// The liveness bug: once a window had grown and the peer was quiet for over a second, the next
    /// deadline stayed a second after the last frame received — in the past — so the handler's timer
    /// re-armed itself at once, forever, and the event loop never read its sockets again.
    @Test func aGrownWindowThroughAQuietPeerNeverLeavesADeadlineInThePast() {
        var harness = Harness(rtt: .milliseconds(50))
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        #expect(harness.window == 2 * Self.initial)
        // A minute of silence from the peer; the keepalive PINGs are answered (the ACK is a frame).
        var now = harness.now
        var ticks = 0
        for _ in 0..<4 {
            let quietUntil = now + .seconds(15)
            ticks += Self.runTimers(&harness.session, from: now, until: quietUntil)
            now = quietUntil
            for case .ping(let ping) in harness.session.producedFrames(now: now) where !ping.ack {
                _ = harness.session.receive(.ping(PingFrame(ack: true, opaque: ping.opaque)), now: now)
            }
        }
        // The shrink at 5 s and one keepalive PING per 15 s: nothing wakes the session in between.
        #expect(ticks <= 6, "\(ticks) ticks in a quiet minute")
        #expect(harness.window == Self.initial)
    }

    @Test func aTickBeforeTheDeadlineDoesNothing() {
        var harness = Harness(rtt: .milliseconds(50))
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        var session = harness.session
        guard let deadline = session.nextDeadline else {
            Issue.record("a grown window has a shrink deadline")
            return
        }
        for early in [harness.now, deadline - .milliseconds(1), deadline - .nanoseconds(1)] {
            var copy = session
            #expect(copy.tick(now: early).isEmpty)
            #expect(copy.nextDeadline == deadline)
            #expect(copy.producedFrames(now: early).isEmpty)
        }
        _ = session.tick(now: deadline)
        #expect(session.nextDeadline.map { $0 > deadline } ?? true)
    }

    /// spec §6.4: a log follow — we finished our direction, the peer streams on. Busy, it lives
    /// past the half-close timeout many times over; quiet for that long, it is reset.
    @Test func theHalfCloseTimeoutIsAnIdleTimer() {
        var configuration = SessionConfiguration(role: .dialer, settings: Self.noKeepalive)
        configuration.halfCloseTimeout = .seconds(600)
        configuration.windowTuning = .disabled
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var session = Session(configuration: configuration, now: now)
        _ = session.receive(.settings(.values(Settings().entries)), now: now)
        guard case .success(let id) = session.openStream(.logs, service: "follow", now: now) else {
            Issue.record("open failed")
            return
        }
        _ = session.finish(id)
        _ = session.producedFrames(now: now)  // OPEN, then FIN: half-closed (local)
        // An hour of log lines, one every 100 s, each taken by the application.
        for _ in 0..<36 {
            Self.runTimers(&session, from: now, until: now + .seconds(100))
            now = now + .seconds(100)
            let events = session.receive(.data(DataFrame(streamID: id, payload: ByteBuffer(string: "line\n"))), now: now)
            #expect(events.contains { if case .data = $0 { true } else { false } }, "the stream was reset")
            session.consume(id, octets: 5, now: now)
        }
        #expect(session.isLive(id))
        // Then the peer falls silent: reset exactly 600 s after the last line.
        let last = now
        Self.runTimers(&session, from: now, until: last + .seconds(600) - .nanoseconds(1))
        #expect(session.isLive(id))
        #expect(session.nextDeadline == last + .seconds(600))
        let events = session.tick(now: last + .seconds(600))
        #expect(events.contains { if case .reset(id, .timeout) = $0 { true } else { false } })
        #expect(!session.isLive(id))
    }

    /// The other direction: the peer finished, we stream on (`kubectl exec` with stdin closed).
    @Test func ourWritesKeepAStreamThePeerFinishedAlive() {
        var configuration = SessionConfiguration(role: .acceptor, settings: Self.noKeepalive)
        configuration.halfCloseTimeout = .seconds(600)
        configuration.windowTuning = .disabled
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var session = Session(configuration: configuration, now: now)
        _ = session.receive(.settings(.values(Settings().entries)), now: now)
        let id = StreamID(1)
        _ = session.receive(.open(OpenFrame(streamID: id, streamClass: .command, service: "exec")), now: now)
        session.accept(id)
        _ = session.receive(.data(DataFrame(streamID: id, flags: .fin, payload: ByteBuffer())), now: now)
        for _ in 0..<36 {
            Self.runTimers(&session, from: now, until: now + .seconds(100))
            now = now + .seconds(100)
            #expect(session.isLive(id))
            _ = session.write(id, ByteBuffer(string: "output\n"), now: now)
            _ = session.producedFrames(now: now)
        }
        #expect(session.isLive(id))
    }

    /// spec §7.4 step 6: the connection window shrinks when idle and gives its growth back once
    /// the credit beyond the initial window was spent; closing gives back everything at once.
    @Test func theConnectionWindowGivesItsGrowthBack() {
        let pool = WindowPool(capacity: 1 << 30)
        var tuning = WindowTuning()
        tuning.pool = pool
        var settings = Settings()
        settings.initialConnectionCredit = 65_536
        var configuration = SessionConfiguration(role: .acceptor, settings: settings)
        configuration.windowTuning = tuning
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var session = Session(configuration: configuration, now: now)
        _ = session.receive(.settings(.values(Settings().entries)), now: now)
        let ping = session.producedFrames(now: now).compactMap { if case .ping(let p) = $0 { p } else { nil } }.first!
        now = now + .milliseconds(50)
        _ = session.receive(.ping(PingFrame(ack: true, opaque: ping.opaque)), now: now)
        _ = session.receive(.open(OpenFrame(streamID: 1, streamClass: .bulk, service: "sink")), now: now)
        session.accept(1)
        // Bursts of half the connection window, one per round trip: it grows.
        var sent = 0
        for _ in 0..<4 {
            now = now + .milliseconds(50)
            let octets = Int(session.connectionReceive.window / 2)
            var left = octets
            while left > 0 {
                let size = min(left, 16_375)
                _ = session.receive(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 0, count: size))), now: now)
                left -= size
            }
            sent += octets
            session.consume(1, octets: octets, now: now)
            _ = session.producedFrames(now: now)
        }
        #expect(session.connectionReceive.window > 65_536)
        #expect(session.connectionEpoch.granted > 0)
        // Quiet: the window returns to its initial size at the shrink deadline.
        Self.runTimers(&session, from: now, until: now + .seconds(6))
        #expect(session.connectionReceive.window == 65_536)
        // The peer spends what it still holds beyond the initial window: the growth goes back.
        now = now + .seconds(6)
        let outstanding = Int(session.connectionReceive.advertised) - sent
        var left = outstanding
        while left > 0 {
            let size = min(left, 16_375)
            _ = session.receive(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 0, count: size))), now: now)
            left -= size
        }
        #expect(session.connectionEpoch.granted == 0)
        #expect(pool.used == 0)
        #expect(session.brokenInvariant() == nil)
    }

    /// spec §7.4 step 4: a connection that closes while its windows are grown gives everything
    /// back to the process pool, and nothing grows afterwards.
    @Test func releasingAClosedConnectionsWindowsEmptiesItsShareOfThePool() {
        let pool = WindowPool(capacity: 1 << 30)
        var tuning = WindowTuning()
        tuning.pool = pool
        var harness = Harness(rtt: .milliseconds(50), tuning: tuning)
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        #expect(pool.used > 0)
        harness.session.releaseWindowGrowth()
        #expect(pool.used == 0)
        #expect(harness.session.brokenInvariant() == nil)
        _ = harness.burst(Int(harness.window / 2), after: .milliseconds(50))
        #expect(pool.used == 0)
    }
}
