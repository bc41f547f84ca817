import NIOCore
import TetherTestSupport
import TetherWire
import Testing

@testable import TetherSession

/// spec §7.4 with a manual clock: windows grow only while they limit the sender, within budgets,
/// and shrink back when idle.
@Suite struct WindowTuningTests {
    /// An acceptor with one inbound stream and a measured minRTT.
    struct Harness {
        var session: Session
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let stream = StreamID(1)
        var sent = 0

        init(rtt: TimeAmount, tuning: WindowTuning = WindowTuning()) {
            var configuration = SessionConfiguration(role: .acceptor, settings: Settings())
            configuration.windowTuning = tuning
            configuration.openTimeout = nil
            self.session = Session(configuration: configuration, now: self.now)
            _ = self.session.receive(.settings(.values(Settings().entries)), now: self.now)
            // The clean RTT sample taken as the peer's SETTINGS arrive (spec §7.4 step 1).
            let ping = self.frames().compactMap { frame -> PingFrame? in
                if case .ping(let ping) = frame, !ping.ack { return ping }
                return nil
            }.first!
            self.now = self.now + rtt
            _ = self.session.receive(.ping(PingFrame(ack: true, opaque: ping.opaque)), now: self.now)
            _ = self.session.receive(
                .open(OpenFrame(streamID: self.stream, streamClass: .bulk, service: "sink")), now: self.now)
            // A first burst: nothing arrived before it, so it cannot show a pause; no growth yet.
            let window = self.window
            _ = self.burst(Int(window / 2), after: .zero)
            precondition(self.window == window)
        }

        mutating func frames() -> [Frame] {
            self.session.producedFrames(now: self.now)
        }

        /// After `gap` of silence a burst of `octets` arrives (in 16 KiB frames) and the application
        /// takes it at once. Returns the stream limit advertised in response, if any.
        mutating func burst(_ octets: Int, after gap: TimeAmount) -> UInt64? {
            self.now = self.now + gap
            var left = octets
            while left > 0 {
                let size = min(left, 16_375)
                _ = self.session.receive(
                    .data(DataFrame(streamID: self.stream, payload: ByteBuffer(repeating: 0, count: size))), now: self.now)
                left -= size
            }
            self.sent += octets
            self.session.consume(self.stream, octets: octets, now: self.now)
            return self.frames().compactMap { frame -> UInt64? in
                if case .credit(.stream(self.stream, let limit)) = frame { return limit }
                return nil
            }.last
        }

        var window: UInt64 { self.session.streams[self.stream]!.receive.window }
    }

    static let initial = UInt64(Settings().initialStreamCredit)

    @Test func aWindowThatLimitsTheSenderDoublesTowardTheBandwidthDelayProduct() {
        let pool = WindowPool(capacity: 1 << 30)
        var tuning = WindowTuning()
        tuning.pool = pool
        var harness = Harness(rtt: .milliseconds(50), tuning: tuning)
        // A sender held back by the window: half a window arrives in a burst once per round trip.
        var window = Self.initial
        for _ in 0..<4 {
            let limit = harness.burst(Int(window / 2), after: .milliseconds(50))
            #expect(harness.window == window * 2)
            #expect(limit == UInt64(harness.sent) + window * 2)
            window *= 2
        }
        #expect(pool.used == window - Self.initial)
    }

    /// spec §7.2: on a path of 5 ms or more credit is renewed every quarter window, so a sender
    /// held back by the window gets most of a window per round trip, not half of one.
    @Test func creditIsRenewedEveryQuarterWindowOnALongPath() {
        var harness = Harness(rtt: .milliseconds(50))
        // Slowly (a second apart), so the window does not grow meanwhile.
        let limit = harness.burst(Int(Self.initial / 4), after: .seconds(1))
        #expect(limit == UInt64(harness.sent) + Self.initial)
    }

    /// Below 5 ms (loopback, a LAN) every half window, which halves the CREDIT frames.
    @Test func creditIsRenewedEveryHalfWindowOnAShortPath() {
        var harness = Harness(rtt: .milliseconds(2))
        #expect(harness.burst(Int(Self.initial / 4), after: .seconds(1)) == nil)
        #expect(harness.burst(Int(Self.initial / 4), after: .seconds(1)) == UInt64(harness.sent) + Self.initial)
    }

    /// No renewal raises a limit by less than 1,024 octets unless the window is smaller than 2 KiB
    /// (§12 counts smaller raises as glitches).
    @Test func aQuarterWindowIsAtLeast1024Octets() {
        #expect(ReceiveWindow(window: 262_144).updateStep(early: true) == 65_536)
        #expect(ReceiveWindow(window: 262_144).updateStep(early: false) == 131_072)
        #expect(ReceiveWindow(window: 4_096).updateStep(early: true) == 1_024)
        #expect(ReceiveWindow(window: 3_000).updateStep(early: true) == 1_024)
        #expect(ReceiveWindow(window: 1_000).updateStep(early: true) == 500)
    }

    @Test func aSlowReaderDoesNotGrowItsWindow() {
        var harness = Harness(rtt: .milliseconds(50))
        for _ in 0..<5 {
            let limit = harness.burst(Int(Self.initial / 2), after: .milliseconds(150))  // ≥ 2 × minRTT
            #expect(limit == UInt64(harness.sent) + Self.initial)
        }
        #expect(harness.window == Self.initial)
    }

    @Test func dataWithoutPausesIsNotWindowLimited() {
        // A sender limited by the path delivers steadily: 16 KiB every 2 ms, fast enough to take
        // half a window within two round trips, but never in bursts.
        var harness = Harness(rtt: .milliseconds(50))
        for _ in 0..<200 {
            _ = harness.burst(16_384, after: .milliseconds(2))
        }
        #expect(harness.window == Self.initial)
    }

    @Test func growthSettlesWhenThePathIsTheLimit() {
        var harness = Harness(rtt: .milliseconds(50))
        // The path carries 128 KiB per round trip. Once the window passes four times that
        // product (half a window per round trip is the product, twice over), epochs outlast
        // two round trips and growth stops.
        for _ in 0..<20 {
            _ = harness.burst(128 << 10, after: .milliseconds(50))
        }
        #expect(harness.window == 2 * Self.initial)
    }

    @Test func aTinyRTTKeepsTheWindowNearItsInitialSize() {
        // Loopback: 100 µs, and 1 GB/s (128 KiB every 131 µs). The cap, 4 × rate × minRTT, is
        // about 400 KB; past it half a window takes longer than two round trips.
        var harness = Harness(rtt: .microseconds(100))
        for _ in 0..<50 {
            _ = harness.burst(128 << 10, after: .microseconds(131))
        }
        #expect(harness.window < 2 * Self.initial)
        #expect(harness.window <= 410_000)
    }

    @Test func aQueueInflatedSampleDoesNotRaiseMinRTT() {
        var harness = Harness(rtt: .milliseconds(1))
        // A later sample taken behind a queue: 80 ms.
        harness.session.refreshRTTIfDue(now: harness.now + .seconds(2))
        let ping = harness.frames().compactMap { frame -> PingFrame? in
            if case .ping(let ping) = frame, !ping.ack { return ping }
            return nil
        }.first!
        harness.now = harness.now + .seconds(2) + .milliseconds(80)
        _ = harness.session.receive(.ping(PingFrame(ack: true, opaque: ping.opaque)), now: harness.now)
        #expect(harness.session.minimumRTT.value == .milliseconds(1))
        #expect(harness.session.lastRTT == .milliseconds(80))
        // So half a window per 10 ms is far slower than the window allows: no growth.
        for _ in 0..<5 {
            _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(10))
        }
        #expect(harness.window == Self.initial)
    }

    @Test func growthIsBoundedByTheConnectionBudgetAndTheProcessPool() {
        var tuning = WindowTuning()
        tuning.connectionBudget = 300 << 10
        tuning.pool = WindowPool(capacity: 1 << 30)
        var harness = Harness(rtt: .milliseconds(50), tuning: tuning)
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        _ = harness.burst(Int(Self.initial), after: .milliseconds(50))
        #expect(harness.window == Self.initial + (300 << 10))

        let pool = WindowPool(capacity: 100 << 10)
        tuning.connectionBudget = 32 << 20
        tuning.pool = pool
        var small = Harness(rtt: .milliseconds(50), tuning: tuning)
        _ = small.burst(Int(Self.initial / 2), after: .milliseconds(50))
        #expect(small.window == Self.initial + (100 << 10))
        #expect(pool.used == 100 << 10)
    }

    @Test func anIdleWindowShrinksAndGivesItsGrowthBack() {
        let pool = WindowPool(capacity: 1 << 30)
        var tuning = WindowTuning()
        tuning.pool = pool
        var harness = Harness(rtt: .milliseconds(50), tuning: tuning)
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        #expect(harness.window == 2 * Self.initial)
        #expect(pool.used == Self.initial)
        // The stream goes quiet: the window returns to its initial size at once, but the growth
        // stays reserved while the peer still holds credit beyond the initial window.
        harness.now = harness.now + .seconds(5)
        _ = harness.session.tick(now: harness.now)
        #expect(harness.window == Self.initial)
        #expect(pool.used == Self.initial)
        // The peer spends that credit; the application takes it (slowly: no growth); now it goes back.
        let outstanding = Int(harness.session.streams[harness.stream]!.receive.advertised) - harness.sent
        #expect(outstanding == Int(2 * Self.initial))
        let limit = harness.burst(outstanding, after: .seconds(1))
        #expect(limit == UInt64(harness.sent) + Self.initial)
        _ = harness.session.tick(now: harness.now)
        #expect(pool.used == 0)
    }

    @Test func closingAStreamGivesItsGrowthBack() {
        let pool = WindowPool(capacity: 1 << 30)
        var tuning = WindowTuning()
        tuning.pool = pool
        var harness = Harness(rtt: .milliseconds(50), tuning: tuning)
        _ = harness.burst(Int(Self.initial / 2), after: .milliseconds(50))
        #expect(pool.used > 0)
        harness.session.reset(harness.stream, code: .cancel)
        #expect(pool.used == 0)
    }
}
