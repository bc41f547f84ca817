import NIOCore
import TetherWire

extension Session {
    /// Runs everything that is due at `now` (spec §6.2, §6.4, §7.4, §10.1, §10.2, §12): keepalive
    /// PINGs and their timeout, open, idle and half-close timeouts, the idle shrink of grown
    /// windows, and the end of a drain's grace period.
    ///
    /// Call it at ``nextDeadline``. Calling it earlier does nothing: it returns no events and
    /// leaves ``nextDeadline`` as it was. Afterwards ``nextDeadline`` is nil or later than `now`,
    /// so a caller that re-arms its timer at it never spins (a timer in the past fires at once,
    /// and SwiftNIO runs due timers before it reads sockets again).
    public mutating func tick(now: NIODeadline) -> SessionEvents {
        guard !self.hasFailed else { return .none }
        var events = SessionEvents()
        if self.phase == .awaitingSettings && self.prefaceDeadline <= now {
            return self.tripped(.preface, "no SETTINGS within \(self.configuration.abuseLimits.prefaceTimeout)")
        }

        if let failure = self.checkKeepalive(now: now) { return failure }

        while let (id, deadline) = self.acceptDeadlines.first, deadline <= now {
            self.acceptDeadlines.removeFirst()
            if let stream = self.streams[id], !stream.accepted {
                self.resetStream(id, .timeout)
                events.append(.reset(id, .timeout))
            }
        }
        if let sweep = self.sweepDeadline, sweep <= now {
            events.append(contentsOf: self.sweep(now: now))
        }
        if let deadline = self.drainDeadline, deadline <= now {
            self.drainDeadline = nil
            for id in self.streams.keys.sorted() {
                self.resetStream(id, .cancel)
                events.append(.reset(id, .cancel))
            }
        }
        return events
    }

    /// When ``tick(now:)`` next has something to do, or nil for never.
    public var nextDeadline: NIODeadline? {
        guard !self.hasFailed else { return nil }
        var next: NIODeadline? = nil
        func consider(_ deadline: NIODeadline?) {
            if let deadline, next.map({ deadline < $0 }) ?? true { next = deadline }
        }
        if self.phase == .awaitingSettings { consider(self.prefaceDeadline) }
        let interval = self.localSettings.keepaliveIntervalMilliseconds
        if interval > 0 {
            consider(self.keepaliveDeadline ?? self.lastReceived + .milliseconds(Int64(interval)))
        }
        consider(self.acceptDeadlines.first?.1)
        consider(self.sweepDeadline)
        consider(self.drainDeadline)
        return next
    }

    /// spec §10.1: PING after an interval without frames; fail when nothing answers in time.
    private mutating func checkKeepalive(now: NIODeadline) -> SessionEvents? {
        let interval = self.localSettings.keepaliveIntervalMilliseconds
        guard interval > 0 else { return nil }
        if let deadline = self.keepaliveDeadline {
            if deadline <= now {
                return self.fail(.keepaliveTimeout, "no frame for \(self.configuration.keepaliveTimeout) after a PING")
            }
        } else if self.lastReceived + .milliseconds(Int64(interval)) <= now {
            self.sendPing(now: now)
            self.keepaliveDeadline = now + self.configuration.keepaliveTimeout
        }
        return nil
    }

    /// Queues a PING whose ACK gives an RTT sample (spec §5.6, §7.4). Returns its payload.
    @discardableResult
    mutating func sendPing(now: NIODeadline) -> UInt64 {
        let opaque = self.nextPingPayload
        self.nextPingPayload &+= 1
        // Only the latest few are kept: a peer that never answers cannot grow this.
        if self.outstandingPings.count >= 8 {
            self.outstandingPings = self.outstandingPings.filter { self.applicationPings.contains($0.key) }
        }
        self.outstandingPings[opaque] = now
        self.control.append(.frame(.ping(PingFrame(ack: false, opaque: opaque))))
        return opaque
    }

    /// The application measures the round trip (spec §5.6): a PING whose ACK is reported as
    /// ``SessionEvent/pong(_:rtt:)``. Returns its payload, or nil when 8 of the application's are
    /// already unanswered (a peer that does not answer cannot make this grow).
    public mutating func ping(now: NIODeadline) -> UInt64? {
        guard self.isActive, self.applicationPings.count < 8 else { return nil }
        let opaque = self.sendPing(now: now)
        self.applicationPings.insert(opaque)
        return opaque
    }

    // MARK: The sweep: per-stream idle timers and window shrinking

    /// Makes sure the sweep runs no later than `deadline`.
    mutating func armSweep(at deadline: NIODeadline) {
        if self.sweepDeadline.map({ deadline < $0 }) ?? true { self.sweepDeadline = deadline }
    }

    /// A stream was created at `now`: its idle timeout, if one is configured, runs from now (spec §12).
    mutating func armIdleTimeout(now: NIODeadline) {
        if let idle = self.configuration.idleTimeout { self.armSweep(at: now + idle) }
    }

    /// A stream half-closed at `now` (its last activity): the half-close timeout runs from now (spec §6.4).
    mutating func armHalfCloseTimeout(now: NIODeadline) {
        if let timeout = self.configuration.halfCloseTimeout { self.armSweep(at: now + timeout) }
    }

    /// How long a stream may go without a frame before it is reset with TIMEOUT: the idle timeout,
    /// and once half-closed the half-close timeout — both idle timers (spec §6.4, §12), so a log
    /// follow or a `kubectl exec` with stdin closed lives as long as its other direction is busy.
    private func streamTimeout(_ phase: StreamState.Phase) -> TimeAmount? {
        let configuration = self.configuration
        guard phase != .open, let halfClose = configuration.halfCloseTimeout else { return configuration.idleTimeout }
        return configuration.idleTimeout.map { min($0, halfClose) } ?? halfClose
    }

    /// Resets streams whose timeout passed, shrinks windows idle for `idleShrink` (spec §7.4 step
    /// 5–6), and sets ``sweepDeadline`` to the exact next moment either is due (later than `now`).
    private mutating func sweep(now: NIODeadline) -> SessionEvents {
        var next: NIODeadline? = nil
        func consider(_ deadline: NIODeadline) {
            if next.map({ deadline < $0 }) ?? true { next = deadline }
        }
        let shrinkAfter = self.configuration.windowTuning.idleShrink
        let initial = UInt64(self.localSettings.initialStreamCredit)
        var expired: [StreamID] = []
        // Walked by index: mutating a value in place keeps the dictionary's storage unshared.
        var index = self.streams.startIndex
        while index != self.streams.endIndex {
            defer { self.streams.formIndex(after: &index) }
            let last = self.streams.values[index].lastActivity
            if let timeout = self.streamTimeout(self.streams.values[index].phase) {
                if last + timeout <= now {
                    expired.append(self.streams.keys[index])
                    continue
                }
                consider(last + timeout)
            }
            guard self.streams.values[index].receive.window > initial else { continue }
            if last + shrinkAfter <= now {
                self.streams.values[index].receive.window = initial
                self.releaseShrunkGrowth(at: index)
            } else {
                consider(last + shrinkAfter)
            }
        }
        var events = SessionEvents()
        for id in expired.sorted() {
            self.resetStream(id, .timeout)
            events.append(.reset(id, .timeout))
        }
        if self.connectionReceive.window > UInt64(self.localSettings.initialConnectionCredit) {
            if self.connectionActivity + shrinkAfter <= now {
                self.connectionReceive.window = UInt64(self.localSettings.initialConnectionCredit)
                self.releaseShrunkConnectionGrowth()
            } else {
                consider(self.connectionActivity + shrinkAfter)
            }
        }
        self.sweepDeadline = next
        return events
    }

    /// A shrunk stream window gives its growth back to the budgets once no more credit than the
    /// initial window is outstanding (spec §7.4 step 5). Called when octets arrive and at the shrink.
    mutating func releaseShrunkGrowth(at index: Dictionary<StreamID, StreamState>.Index) {
        let initial = UInt64(self.localSettings.initialStreamCredit)
        let released = self.streams.inPlace(index) { stream -> UInt64 in
            let receive = stream.receive
            guard stream.epoch.granted > 0, receive.window == initial, receive.advertised - receive.received <= initial
            else { return 0 }
            defer { stream.epoch.granted = 0 }
            return stream.epoch.granted
        }
        self.giveBack(released)
    }

    /// The same for the connection window (spec §7.4 step 6).
    mutating func releaseShrunkConnectionGrowth() {
        guard self.connectionEpoch.granted > 0 else { return }
        let initial = UInt64(self.localSettings.initialConnectionCredit)
        let receive = self.connectionReceive
        guard receive.window == initial, receive.advertised - receive.received <= initial else { return }
        self.giveBack(self.connectionEpoch.granted)
        self.connectionEpoch.granted = 0
    }

    /// The connection is gone: every window's growth goes back to the process pool and nothing
    /// grows again (spec §7.4 step 4). The handler calls it when the transport closes; a session
    /// dropped without it keeps its growth out of the pool.
    public mutating func releaseWindowGrowth() {
        guard !self.windowGrowthReleased else { return }
        self.windowGrowthReleased = true
        self.configuration.windowTuning.pool.release(self.initialWindowReserved)
        self.initialWindowReserved = 0
        self.giveBack(self.connectionEpoch.granted)
        self.connectionEpoch.granted = 0
        var index = self.streams.startIndex
        while index != self.streams.endIndex {
            let granted = self.streams.inPlace(index) { stream in
                defer { stream.epoch.granted = 0 }
                return stream.epoch.granted
            }
            self.giveBack(granted)
            self.streams.formIndex(after: &index)
        }
    }

    /// The exact moment the sweep next has work, for ``brokenInvariant()``: ``sweepDeadline`` must
    /// be at or before it.
    func exactSweepDue() -> NIODeadline? {
        var next: NIODeadline? = nil
        func consider(_ deadline: NIODeadline) {
            if next.map({ deadline < $0 }) ?? true { next = deadline }
        }
        let shrinkAfter = self.configuration.windowTuning.idleShrink
        let initial = UInt64(self.localSettings.initialStreamCredit)
        for stream in self.streams.values {
            if let timeout = self.streamTimeout(stream.phase) { consider(stream.lastActivity + timeout) }
            if stream.receive.window > initial { consider(stream.lastActivity + shrinkAfter) }
        }
        if self.connectionReceive.window > UInt64(self.localSettings.initialConnectionCredit) {
            consider(self.connectionActivity + shrinkAfter)
        }
        return next
    }
}
