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
    /// A stream that takes nothing for this long falls back to its initial window (spec §7.4).
    public var idleShrink: TimeAmount = .seconds(5)
    /// While data flows, a new RTT sample is taken when the newest is older than this.
    public var rttRefresh: TimeAmount = .seconds(1)

    public init() {}

    public static let disabled: WindowTuning = {
        var tuning = WindowTuning()
        tuning.enabled = false
        return tuning
    }()
}

/// The process-wide pool of window growth (spec §7.4): 10,000 connections cannot together grant
/// more than it holds. Thread-safe; shared by every session that uses it.
public final class WindowPool: Sendable {
    private let state: NIOLockedValueBox<(capacity: UInt64, used: UInt64)>

    public init(capacity: UInt64) {
        self.state = NIOLockedValueBox((capacity, 0))
    }

    /// 1 GiB for the whole process.
    public static let shared = WindowPool(capacity: 1 << 30)

    /// Takes up to `octets`; returns what was granted.
    func take(_ octets: UInt64) -> UInt64 {
        self.state.withLockedValue { state in
            let granted = min(octets, state.capacity - state.used)
            state.used += granted
            return granted
        }
    }

    func give(_ octets: UInt64) {
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

/// The epoch of one receive window: when it started and what had been taken then (spec §7.4).
struct WindowEpoch: Hashable, Sendable {
    var start: NIODeadline
    var consumedAtStart: UInt64
    /// Growth this window holds from the budgets, to give back.
    var granted: UInt64 = 0
    /// The delivery rate (octets per second) measured when the window last grew; 0 before.
    var rateAtLastGrowth: Double = 0
}

extension Session {
    /// Ends a window's epoch after an update was advertised; grows the window if it limited the
    /// sender (spec §7.4 steps 2–4). Returns the new window.
    mutating func tune(
        _ window: inout ReceiveWindow, epoch: inout WindowEpoch, initial: UInt64, maximum: UInt64, now: NIODeadline
    ) {
        defer {
            epoch = WindowEpoch(
                start: now, consumedAtStart: window.consumed, granted: epoch.granted,
                rateAtLastGrowth: epoch.rateAtLastGrowth)
        }
        let tuning = self.configuration.windowTuning
        guard tuning.enabled, let minRTT = self.minimumRTT.value, minRTT.nanoseconds > 0 else { return }
        let elapsed = now - epoch.start
        guard elapsed < minRTT * 2 else { return }  // the window did not limit the sender
        let taken = window.consumed - epoch.consumedAtStart
        let rate = Double(taken) * 1e9 / Double(max(elapsed.nanoseconds, 1))
        // A doubling that did not raise the delivery rate by a quarter shows the window is not
        // what limits the sender (the CPU or the path is): larger windows would only queue.
        guard epoch.rateAtLastGrowth == 0 || rate >= epoch.rateAtLastGrowth * 1.25 else { return }
        let bdp = UInt64(rate * Double(minRTT.nanoseconds) / 1e9)
        let cap = min(maximum, max(initial, 2 * bdp))
        let target = min(window.window * 2, cap)
        guard target > window.window else { return }
        let wanted = target - window.window
        let fromConnection = min(wanted, tuning.connectionBudget - self.budgetUsed)
        let granted = tuning.pool.take(fromConnection)
        guard granted > 0 else { return }
        self.budgetUsed += granted
        epoch.granted += granted
        epoch.rateAtLastGrowth = rate
        window.window += granted
    }

    /// Gives a window's growth back to the budgets (spec §7.4 step 5).
    mutating func releaseGrowth(_ epoch: inout WindowEpoch) {
        epoch.rateAtLastGrowth = 0
        guard epoch.granted > 0 else { return }
        self.configuration.windowTuning.pool.give(epoch.granted)
        self.budgetUsed -= min(epoch.granted, self.budgetUsed)
        epoch.granted = 0
    }

    /// Whether to take a fresh RTT sample now (spec §7.4 step 1).
    mutating func refreshRTTIfDue(now: NIODeadline) {
        let tuning = self.configuration.windowTuning
        guard tuning.enabled, self.rttPing == nil else { return }
        if let newest = self.minimumRTT.newest, newest + tuning.rttRefresh > now { return }
        self.rttPing = self.sendPing(now: now)
    }
}
