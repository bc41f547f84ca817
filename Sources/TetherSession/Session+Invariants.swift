import TetherWire

extension Session {
    /// What must hold between any two calls, whatever the peer sent (spec §6, §7, §12): nil when
    /// it does, otherwise what broke. For the fuzzer and the tests; O(streams).
    public func brokenInvariant() -> String? {
        func windows(_ send: SendWindow, _ receive: ReceiveWindow, _ name: String) -> String? {
            if send.sent > send.limit { return "\(name): sent \(send.sent) beyond the limit \(send.limit)" }
            if receive.received > receive.advertised {
                return "\(name): received \(receive.received) beyond the advertised \(receive.advertised)"
            }
            if receive.consumed > receive.received { return "\(name): consumed more than received" }
            return nil
        }
        if let broken = windows(self.connectionSend, self.connectionReceive, "connection") { return broken }
        for (id, stream) in self.streams {
            if let broken = windows(stream.send, stream.receive, "stream \(id)") { return broken }
            if self.closedStreams[id] != nil { return "stream \(id) is both live and closed" }
            if stream.outbound.bufferedBytes < 0 { return "stream \(id) buffers a negative count" }
        }
        for streamClass in StreamClass.allCases where self.openedByPeer[streamClass] > self.grantedToPeer[streamClass] {
            return "the peer opened \(self.openedByPeer[streamClass]) \(streamClass.name) streams, \(self.grantedToPeer[streamClass]) granted"
        }
        // Bounded memory: every queue a peer can grow has a cap (spec §12). Beyond the control-frame
        // cap only one credit entry per live stream, a RESET per stream we reset (itself bounded by
        // the reset rate) and a few of our own frames may wait.
        let controlCap = self.configuration.abuseLimits.controlQueue + self.streams.count + self.counters.resetsSent + 16
        if self.control.count > controlCap { return "control queue holds \(self.control.count)" }
        // A stream waiting for connection credit waits only while its next frame does not fit.
        for id in self.connectionBlocked {
            guard let stream = self.streams[id] else { continue }
            if UInt64(stream.outbound.nextFrameMinimum) <= self.connectionSend.available {
                return "stream \(id) waits for connection credit that covers its next frame"
            }
        }
        // Window growth (spec §7.4): the budget holds exactly what the windows hold.
        let held = self.streams.values.reduce(self.connectionEpoch.granted) { $0 + $1.epoch.granted }
        if held != self.budgetUsed { return "windows hold \(held) octets of growth, the budget counts \(self.budgetUsed)" }
        // Timers: the sweep runs no later than the first stream timeout or window shrink due.
        if let due = self.exactSweepDue(), self.sweepDeadline.map({ $0 > due }) ?? true {
            return "a timeout or window shrink is due at \(due), the sweep is at \(String(describing: self.sweepDeadline))"
        }
        if self.outstandingPings.count > 8 { return "\(self.outstandingPings.count) PINGs outstanding" }
        return nil
    }
}
