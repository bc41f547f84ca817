import NIOCore
import TetherWire

extension Session {
    /// Runs everything that is due at `now` (spec §6.2, §6.4, §10.1, §10.2, §12): keepalive PINGs
    /// and their timeout, open, half-close and idle timeouts, and the end of a drain's grace period.
    ///
    /// Call it at ``nextDeadline`` (calling it early or late is harmless).
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
        while let (id, deadline) = self.halfCloseDeadlines.first, deadline <= now {
            self.halfCloseDeadlines.removeFirst()
            if let stream = self.streams[id], stream.phase != .open {
                self.resetStream(id, .timeout)
                events.append(.reset(id, .timeout))
            }
        }
        if let idle = self.configuration.idleTimeout {
            let expired = self.streams.values.filter { $0.lastActivity + idle <= now }.map(\.id).sorted()
            for id in expired {
                self.resetStream(id, .timeout)
                events.append(.reset(id, .timeout))
            }
        }
        self.shrinkIdleWindows(now: now)
        if let deadline = self.drainDeadline, deadline <= now {
            self.drainDeadline = nil
            for id in self.streams.keys.sorted() {
                self.resetStream(id, .cancel)
                events.append(.reset(id, .cancel))
            }
        }
        return events
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
        if self.outstandingPings.count >= 8 { self.outstandingPings.removeAll() }
        self.outstandingPings[opaque] = now
        self.control.append(.frame(.ping(PingFrame(ack: false, opaque: opaque))))
        return opaque
    }

    /// spec §7.4 step 5: a stream that took nothing for a while returns to its initial window, and
    /// its growth goes back to the budgets once no credit beyond the initial window is outstanding.
    private mutating func shrinkIdleWindows(now: NIODeadline) {
        let tuning = self.configuration.windowTuning
        let initial = UInt64(self.localSettings.initialStreamCredit)
        for id in self.grownStreams {
            guard let index = self.streams.index(forKey: id) else { continue }
            if self.streams.values[index].lastActivity + tuning.idleShrink <= now {
                self.streams.values[index].receive.window = initial
            }
            // The growth goes back once the window is initial again and no more credit than that is out.
            let outstanding = self.streams.values[index].receive.advertised - self.streams.values[index].receive.received
            if self.streams.values[index].receive.window == initial && outstanding <= initial {
                var epoch = self.streams.values[index].epoch
                self.releaseGrowth(&epoch)
                self.streams.values[index].epoch = epoch
                self.grownStreams.remove(id)
            }
        }
    }

    mutating func armHalfCloseTimeout(_ id: StreamID, now: NIODeadline) {
        if let timeout = self.configuration.halfCloseTimeout {
            self.halfCloseDeadlines.append((id, now + timeout))
        }
    }

    /// When ``tick(now:)`` next has something to do, or nil for never. Idle timeouts, when
    /// configured, are checked at least every second.
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
        consider(self.halfCloseDeadlines.first?.1)
        consider(self.drainDeadline)
        if (self.configuration.idleTimeout != nil && !self.streams.isEmpty) || !self.grownStreams.isEmpty {
            consider(self.lastReceived + .seconds(1))
        }
        return next
    }
}
