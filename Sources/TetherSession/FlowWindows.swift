import NIOCore

/// The sending side of one credit limit, stream or connection (spec §7.1): octets sent against the
/// absolute limit the peer granted.
struct SendWindow: Hashable, Sendable {
    private(set) var limit: UInt64
    private(set) var sent: UInt64 = 0

    init(limit: UInt64) {
        self.limit = limit
    }

    var available: UInt64 { self.limit - self.sent }

    mutating func spend(_ count: Int) {
        self.sent += UInt64(count)
        assert(self.sent <= self.limit, "sent beyond credit")
    }

    /// Applies a CREDIT. Returns false when the new limit is lower than the current one (spec §7.1).
    mutating func raise(to newLimit: UInt64) -> Bool {
        guard newLimit >= self.limit else { return false }
        self.limit = newLimit
        return true
    }
}

/// The receiving side of one credit limit (spec §7.1, §7.2): octets received against the limit we
/// advertised, and octets the application has taken. Credit is re-advertised only for taken octets.
///
/// This is the window-policy seam: the window size is fixed here; auto-tuning (spec §7.4) changes
/// ``window`` between epochs.
struct ReceiveWindow: Hashable, Sendable {
    /// The window the limit is kept ahead of what was taken.
    var window: UInt64
    /// The limit the peer may send up to.
    private(set) var advertised: UInt64
    private(set) var received: UInt64 = 0
    private(set) var consumed: UInt64 = 0
    /// When the last octets arrived, and whether arrivals paused during the current epoch: a
    /// sender held back by the window sends in bursts, one per round trip (spec §7.4).
    var lastArrival: NIODeadline?
    var sawPause = false

    init(window: UInt64) {
        self.window = window
        self.advertised = window
    }

    /// Octets received and not yet taken by the application.
    var unconsumed: UInt64 { self.received - self.consumed }

    /// Notes an arrival: a pause of a quarter minRTT or more since the last one marks a burst
    /// (spec §7.4).
    mutating func noteArrival(now: NIODeadline, minRTT: TimeAmount?) {
        if let last = self.lastArrival, let minRTT, now - last >= .nanoseconds(minRTT.nanoseconds / 4) {
            self.sawPause = true
        }
        self.lastArrival = now
    }

    /// Counts arriving octets. Returns false when they exceed the advertised limit (spec §7.1).
    mutating func receive(_ count: Int) -> Bool {
        guard UInt64(count) <= self.advertised - self.received else { return false }
        self.received += UInt64(count)
        return true
    }

    /// Counts octets the application took. Returns true when a new limit should be advertised:
    /// half the window was taken since the last update, or a quarter when `early` (spec §7.2).
    mutating func consume(_ count: Int, early: Bool = false) -> Bool {
        let count = min(UInt64(count), self.unconsumed)
        self.consumed += count
        return count > 0 && self.advertised - self.consumed <= self.window - self.updateStep(early: early)
    }

    /// Half the window; early, a quarter but at least 1,024 octets (§12 counts smaller raises
    /// as glitches).
    func updateStep(early: Bool) -> UInt64 {
        early ? max(self.window / 4, min(self.window / 2, 1_024)) : self.window / 2
    }

    /// Moves the limit to a window ahead of what was taken. Limits only grow (spec §7.1).
    mutating func advertise() {
        self.advertised = max(self.advertised, self.consumed + self.window)
    }
}
