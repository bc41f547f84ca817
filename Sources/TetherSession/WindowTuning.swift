import NIOConcurrencyHelpers
import NIOCore

/// Receive-window auto-tuning (spec §7.4): windows grow toward the bandwidth-delay product,
/// judged by the *minimum* recent RTT, within a per-connection budget and a process-wide pool.
public struct WindowTuning: Sendable {
    /// Off: every window stays at its initial size (the session scripts run this way).
    public var enabled = true
    /// The largest window of one stream (spec §7.4: 16 MiB).
    public var maxStreamWindow: UInt64 = 16 << 20
    /// The largest connection window (spec §7.4: 32 MiB).
    public var maxConnectionWindow: UInt64 = 32 << 20
    /// Growth beyond the initial windows one connection may hold (spec §7.4: 32 MiB).
    public var connectionBudget: UInt64 = 32 << 20
    /// Growth shared by every connection of the process (spec §7.4: 1 GiB).
    public var pool: WindowPool = .shared
    /// The initial connection window is taken from `pool` too — all of it beyond
    /// ``guaranteedInitialWindow`` — before the preface announces it, and given back when the
    /// connection ends; a connection that finds the pool spent announces less. A hub gives each
    /// identity's connections a pool of their own, so that what one identity can make it buffer
    /// is bounded however many connections it holds (README `limits.windowMemoryPerIdentity`).
    public var initialWindowFromPool = false
    /// A stream that takes nothing for this long falls back to its initial window (spec §7.4).
    public var idleShrink: TimeAmount = .seconds(5)
    /// While data flows, a new RTT sample is taken when the newest is older than this.
    public var rttRefresh: TimeAmount = .seconds(1)

    public init() {}

    /// What a connection's initial window is at least, pool or no pool: enough for commands and
    /// CREDIT to keep moving.
    public static let guaranteedInitialWindow: UInt64 = 64 << 10

    public static let disabled: WindowTuning = {
        var tuning = WindowTuning()
        tuning.enabled = false
        return tuning
    }()
}

/// The process-wide pool of window growth (spec §7.4): 10,000 connections cannot together grant
/// more than it holds. Thread-safe; shared by every session that uses it.
///
/// A pool may have a parent: growth taken from it is taken from the parent too (an identity's
/// pool on a hub, inside the process's), while initial windows (``WindowTuning/initialWindowFromPool``)
/// are reserved in this pool alone.
public final class WindowPool: Sendable {
    private let state: NIOLockedValueBox<(capacity: UInt64, used: UInt64)>
    private let parent: WindowPool?

    public init(capacity: UInt64, parent: WindowPool? = nil) {
        self.state = NIOLockedValueBox((capacity, 0))
        self.parent = parent
    }

    /// 1 GiB for the whole process.
    public static let shared = WindowPool(capacity: 1 << 30)

    /// Takes up to `octets` of growth, from the parent too; returns what was granted.
    func take(_ octets: UInt64) -> UInt64 {
        let granted = self.reserve(octets)
        guard let parent = self.parent else { return granted }
        let fromParent = parent.take(granted)
        self.release(granted - fromParent)
        return fromParent
    }

    /// Gives growth back, to the parent too.
    func give(_ octets: UInt64) {
        self.release(octets)
        self.parent?.give(octets)
    }

    /// Takes up to `octets` from this pool alone; returns what was granted.
    func reserve(_ octets: UInt64) -> UInt64 {
        self.state.withLockedValue { state in
            let granted = min(octets, state.capacity - state.used)
            state.used += granted
            return granted
        }
    }

    /// Gives back what ``reserve(_:)`` took.
    func release(_ octets: UInt64) {
        self.state.withLockedValue { $0.used -= min(octets, $0.used) }
    }

    /// Octets currently granted.
    public var used: UInt64 { self.state.withLockedValue { $0.used } }
}

/// The RTT the tuning trusts (spec §7.4): the smallest PING round trip seen on the connection,
/// including the one taken as it opens, before any data queues up. A queue-inflated sample cannot
/// raise it — and while a sender is saturated every sample is queue-inflated, because the PING ACK
/// waits behind the data the window itself let into buffers.
struct MinimumRTT: Sendable {
    private(set) var value: TimeAmount?
    private(set) var newest: NIODeadline?

    mutating func add(_ rtt: TimeAmount, at now: NIODeadline) {
        self.value = self.value.map { min($0, rtt) } ?? rtt
        self.newest = now
    }
}

/// The tuning state of one receive window (spec §7.4).
struct WindowEpoch: Sendable {
    /// Growth this window holds from the budgets, to give back.
    var granted: UInt64 = 0
    /// When the current epoch started.
    var start: NIODeadline
    /// The ends of the last few epochs, to measure the rate over at least one minRTT.
    var history: CircularBuffer<(at: NIODeadline, consumed: UInt64)>

    init(opened: NIODeadline) {
        self.start = opened
        self.history = CircularBuffer(initialCapacity: 0)
        self.history.append((opened, 0))
    }
}


extension Session {
    /// What tuning reads of the session, taken before a window is borrowed in place (a stream's
    /// window lives in the streams dictionary, which ``tune(_:epoch:initial:maximum:now:view:)``
    /// must not reach through `self` while it is borrowed).
    struct TuningView {
        var tuning: WindowTuning
        var minRTT: TimeAmount?
        var mayGrow: Bool
        var budgetLeft: UInt64
    }

    var tuningView: TuningView {
        let tuning = self.configuration.windowTuning
        return TuningView(
            tuning: tuning, minRTT: self.minimumRTT.value, mayGrow: !self.windowGrowthReleased,
            budgetLeft: tuning.connectionBudget - self.budgetUsed)
    }

    /// Ends a window's epoch after an update was advertised; grows the window if it held the
    /// sender back (spec §7.4 steps 2–4). Returns the octets it took from the process pool, which
    /// the caller books with ``booked(_:now:)``.
    static func tune(
        _ window: inout ReceiveWindow, epoch: inout WindowEpoch, initial: UInt64, maximum: UInt64, now: NIODeadline,
        view: TuningView
    ) -> UInt64 {
        let paused = window.sawPause
        window.sawPause = false
        let elapsed = now - epoch.start
        defer {
            epoch.start = now
            epoch.history.append((now, window.consumed))
            if epoch.history.count > 8 { epoch.history.removeFirst() }
        }
        guard view.tuning.enabled, view.mayGrow, let minRTT = view.minRTT, minRTT.nanoseconds > 0 else { return 0 }
        // Held back by the window: half of it was taken within two round trips, and the data came
        // in bursts with pauses between them (a sender limited by the path sends without pause).
        guard paused, elapsed < minRTT * 2 else { return 0 }
        // The rate over the last minRTT or more: a window-limited sender delivers in bursts, one per
        // round trip, so a shorter span would see only the burst or only the gap.
        let reference = epoch.history.last(where: { $0.at + minRTT <= now }) ?? epoch.history.first ?? (now, 0)
        let span = max((now - reference.at).nanoseconds, minRTT.nanoseconds)
        let rate = Double(window.consumed - reference.consumed) * 1e9 / Double(span)
        // A sender held back by the window delivers most of a window per round trip (credit is
        // renewed every quarter window on such paths, `renewsCreditEarly`), so 4 × rate × minRTT
        // is several times the window and lets it double; once the path is the limit, its data
        // comes without pauses and growth stops, at most at four times the product.
        let cap = min(maximum, max(initial, UInt64(4 * rate * Double(minRTT.nanoseconds) / 1e9)))
        let target = min(window.window * 2, cap)
        guard target > window.window else { return 0 }
        let granted = view.tuning.pool.take(min(target - window.window, view.budgetLeft))
        epoch.granted += granted
        window.window += granted
        return granted
    }

    /// Books growth that ``tune(_:epoch:initial:maximum:now:view:)`` granted against this
    /// connection's budget, and arms the shrink (spec §7.4 step 5).
    mutating func booked(_ granted: UInt64, now: NIODeadline) {
        guard granted > 0 else { return }
        self.budgetUsed += granted
        self.armSweep(at: now + self.configuration.windowTuning.idleShrink)
    }

    /// Whether credit is renewed every quarter window instead of every half (spec §7.2): on a path
    /// whose round trip is 5 ms or more — a WAN; not loopback or a LAN, where a busy process's
    /// first RTT sample can read near a millisecond. A sender held back by the window sends a
    /// burst per round trip; renewed at half, the first half-window of the burst triggers the
    /// update and the rest is taken too late to count, so the sender gets about half a window per
    /// round trip. On a short path the window rarely holds a sender back — tuning grows it where
    /// it does — and renewing at half sends half the CREDIT frames.
    var renewsCreditEarly: Bool {
        guard let minRTT = self.minimumRTT.value else { return false }
        return minRTT >= .milliseconds(5)
    }

    /// Gives a window's growth back to the budgets (spec §7.4 step 5).
    mutating func giveBack(_ granted: UInt64) {
        guard granted > 0 else { return }
        self.configuration.windowTuning.pool.give(granted)
        self.budgetUsed -= min(granted, self.budgetUsed)
    }

    /// Whether to take a fresh RTT sample now (spec §7.4 step 1).
    mutating func refreshRTTIfDue(now: NIODeadline) {
        let tuning = self.configuration.windowTuning
        guard tuning.enabled, self.rttPing == nil else { return }
        if let newest = self.minimumRTT.newest, newest + tuning.rttRefresh > now { return }
        self.rttPing = self.sendPing(now: now)
    }
}
