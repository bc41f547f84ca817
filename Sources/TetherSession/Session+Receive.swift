import NIOCore
import TetherWire

extension Session {
    /// Processes one frame from the peer (spec §3–§10, §12).
    public mutating func receive(_ frame: Frame, now: NIODeadline) -> SessionEvents {
        if self.hasFailed { return .none }  // spec §10.3: nothing more is processed
        self.counters.framesReceived += 1
        self.lastReceived = now
        self.keepaliveDeadline = nil

        guard self.phase == .active else {
            // spec §3.1: the first frame is the peer's SETTINGS.
            guard case .settings(.values(let entries)) = frame else {
                return self.fail(.protocolError, "the first frame must be SETTINGS")
            }
            return self.receiveSettings(entries)
        }

        // DATA and CREDIT judge whether they carried anything (spec §12 empty-frame run); every
        // other frame ends a run.
        switch frame {
        case .data, .credit: break
        default: self.emptyFrames = 0
        }
        switch frame {
        case .data(let data):
            return self.receiveData(data, now: now)
        case .open(let open):
            return self.receiveOpen(open, now: now)
        case .reset(let reset):
            return self.receiveReset(reset, now: now)
        case .credit(let credit):
            return self.receiveCredit(credit, now: now)
        case .opened(let id):
            return self.receiveOpened(id, now: now)
        case .settings(.values):
            return self.fail(.protocolError, "a second SETTINGS frame")
        case .settings(.ack):
            guard !self.settingsAckReceived else { return self.fail(.protocolError, "an unsolicited SETTINGS ACK") }
            self.settingsAckReceived = true
            return .none
        case .ping(let ping):
            self.counters.pingsReceived += 1
            return self.receivePing(ping, now: now)
        case .goAway(let goAway):
            return self.receiveGoAway(goAway)
        case .unknown:
            self.counters.unknownFrames += 1  // spec §4.1: ignored and counted
            return self.glitch("an unknown frame type", now: now)
        }
    }

    /// spec §3.2–§3.4.
    private mutating func receiveSettings(_ entries: [Setting]) -> SessionEvents {
        let peer: Settings
        do {
            peer = try Settings(validating: entries)
        } catch {
            return self.fail(error.code, error.description)
        }
        guard let version = Settings.negotiateVersion(self.localSettings, peer) else {
            return self.fail(
                .versionMismatch,
                "peer speaks \(peer.versionMin)…\(peer.versionMax), we speak \(self.localSettings.versionMin)…\(self.localSettings.versionMax)"
            )
        }
        self.version = version
        self.peerSettings = peer
        self.phase = .active
        self.connectionSend = SendWindow(limit: UInt64(peer.initialConnectionCredit))
        self.peerStreamLimit = peer.initialStreams
        self.control.append(.frame(.settings(.ack)))
        // spec §7.4: the clean RTT sample, taken before any data can queue ahead of it.
        self.refreshRTTIfDue(now: self.lastReceived)
        return SessionEvents(.ready(peer: peer))
    }

    /// spec §5.1, §6.3, §7.1.
    private mutating func receiveData(_ frame: DataFrame, now: NIODeadline) -> SessionEvents {
        let id = frame.streamID
        let octets = frame.payload.readableBytes
        let run = self.noteEmpty(octets == 0 && frame.flags.isDisjoint(with: [.fin, .endMessage]))
        guard run.isEmpty else { return run }
        self.counters.dataOctetsReceived += octets
        guard self.connectionReceive.receive(octets) else {
            return self.fail(.flowControlError, "DATA on stream \(id) exceeds connection credit")
        }
        self.connectionReceive.noteArrival(now: now, minRTT: self.minimumRTT.value)
        if octets > 0 {
            self.connectionActivity = now
            self.releaseShrunkConnectionGrowth()
        }
        guard let index = self.streams.index(forKey: id) else {
            if self.isIdle(id) {
                return self.fail(.protocolError, "DATA on stream \(id), which was never opened")
            }
            switch self.closedStreams[id] {
            case .closedByPeer:
                return self.fail(.streamClosed, "DATA on stream \(id) after the peer closed it")
            case .resetByUs:
                break
            case nil:
                self.consumeConnection(octets, now: nil)
                return self.glitch("DATA on forgotten stream \(id)", now: now)  // spec §6.3
            }
            self.consumeConnection(octets, now: nil)
            return .none
        }

        let minRTT = self.minimumRTT.value
        let localAlgorithms = self.localSettings.compression
        self.counters.dataOctetsReceivedByClass[self.streams.values[index].streamClass] += octets
        let arrival = self.streams.inPlace(index) { stream -> DataArrival in
            guard stream.phase != .halfClosedRemote else { return .afterFIN }
            guard stream.receive.receive(octets) else { return .overCredit }
            stream.receive.noteArrival(now: now, minRTT: minRTT)
            stream.lastActivity = now
            return .accepted(mayBeCompressed: stream.peerMayCompress(localAlgorithms: localAlgorithms))
        }
        let mayBeCompressed: Bool
        switch arrival {
        case .afterFIN: return self.fail(.streamClosed, "DATA on stream \(id) after the peer's FIN")
        case .overCredit: return self.fail(.flowControlError, "DATA on stream \(id) exceeds stream credit")
        case .accepted(let compressed): mayBeCompressed = compressed
        }
        self.releaseShrunkGrowth(at: index)

        if frame.flags.contains(.compressed) && !mayBeCompressed {
            self.resetStream(id, .compressionError)  // spec §9.2: a stream error
            var events = SessionEvents(.reset(id, .compressionError))
            events.append(contentsOf: self.countReset(now: now))
            return events
        }
        if frame.flags.contains(.fin) {
            self.peerFinished(id, now: now)
        }
        return SessionEvents(.data(id, frame.payload, frame.flags))
    }

    private enum DataArrival {
        case afterFIN
        case overCredit
        case accepted(mayBeCompressed: Bool)
    }

    /// The peer's FIN arrived on a live stream (spec §6.3).
    private mutating func peerFinished(_ id: StreamID, now: NIODeadline) {
        switch self.streams[id]?.phase {
        case .open:
            self.streams[id]!.phase = .halfClosedRemote
            self.armHalfCloseTimeout(now: now)
        case .halfClosedLocal:
            self.removeStream(id, ending: .closedByPeer, keepUnconsumed: true)
        case .halfClosedRemote, nil:
            break
        }
    }

    /// spec §5.2, §6.1, §6.2, §7.3, §9.2, §10.2.
    private mutating func receiveOpen(_ open: OpenFrame, now: NIODeadline) -> SessionEvents {
        let id = open.streamID
        guard !self.role.opens(id) else {
            return self.fail(.protocolError, "OPEN on stream \(id), which has our parity")
        }
        guard id > self.highestPeerID else {
            return self.fail(.protocolError, "OPEN on stream \(id), not above \(self.highestPeerID)")
        }
        guard self.peerGoAway == nil else {
            return self.fail(.protocolError, "OPEN on stream \(id) after the peer's own GOAWAY")  // spec §10.2 step 1
        }
        guard self.role == .dialer || open.metadata[OpenMetadata.userKey] == nil else {
            return self.fail(.protocolError, "OPEN on stream \(id) carries \(OpenMetadata.userKey), which only acceptors set")  // spec §5.2.1
        }
        guard self.openedByPeer[open.streamClass] < self.grantedToPeer[open.streamClass] else {
            return self.fail(
                .streamLimitError,
                "\(open.streamClass.name) stream \(id) beyond the \(self.grantedToPeer[open.streamClass]) granted")
        }
        self.highestPeerID = id
        self.openedByPeer[open.streamClass] += 1
        self.counters.streamsOpenedByPeer += 1
        self.counters.streamsOpenedByPeerByClass[open.streamClass] += 1

        let settings = self.localSettings
        self.streams[id] = StreamState(
            id: id,
            streamClass: open.streamClass,
            compression: open.compression,
            openedByPeer: true,
            accepted: false,
            lastActivity: now,
            send: SendWindow(limit: UInt64(self.peerSettings!.initialStreamCredit)),
            receive: ReceiveWindow(window: UInt64(settings.initialStreamCredit)),
            epoch: WindowEpoch(opened: now)
        )
        self.armIdleTimeout(now: now)
        if self.localGoAway != nil {
            self.resetStream(id, .refusedStream)  // spec §10.2 step 3: our state, never counted
            return .none
        }
        guard settings.compression.contains(open.compression) else {
            self.resetStream(id, .compressionError)  // spec §9.2
            return self.countReset(now: now)
        }
        if let timeout = self.configuration.openTimeout {
            self.acceptDeadlines.append((id, now + timeout))
        }
        let inbound = InboundStream(
            id: id, streamClass: open.streamClass, service: open.service, metadata: open.metadata,
            compression: open.compression)
        return SessionEvents(.opened(inbound))
    }

    /// spec §5.3, §6.5.
    private mutating func receiveReset(_ reset: ResetFrame, now: NIODeadline) -> SessionEvents {
        let id = reset.streamID
        guard let stream = self.streams[id] else {
            if self.isIdle(id) {
                return self.fail(.protocolError, "RESET on stream \(id), which was never opened")
            }
            if self.closedStreams[id] == nil { return self.glitch("RESET on forgotten stream \(id)", now: now) }
            return .none  // a reset crossing ours, or a stream already closed
        }
        guard reset.finalSize == stream.receive.received else {
            return self.fail(
                .flowControlError,
                "RESET on stream \(id) says \(reset.finalSize) octets were sent, \(stream.receive.received) arrived")
        }
        self.counters.resetsReceived += 1
        self.removeStream(id, ending: .closedByPeer, keepUnconsumed: false)
        var events = SessionEvents(.reset(id, reset.code))
        // spec §12: the reset rate counts streams the peer opens and resets (rapid reset). A
        // RESET of a stream we opened — the peer refusing or cancelling it — never counts: there
        // are no more of those than we chose to open.
        if stream.openedByPeer { events.append(contentsOf: self.countReset(now: now)) }
        return events
    }

    /// spec §5.8: the peer accepted a stream we opened. On a stream the peer opened, or a second
    /// time, it is a connection error; on a stream that has ended since, it crossed its end.
    private mutating func receiveOpened(_ id: StreamID, now: NIODeadline) -> SessionEvents {
        guard let index = self.streams.index(forKey: id) else {
            if self.isIdle(id) { return self.fail(.protocolError, "OPENED on stream \(id), which was never opened") }
            if self.closedStreams[id] == nil { return self.glitch("OPENED on forgotten stream \(id)", now: now) }
            return .none
        }
        guard !self.streams.values[index].openedByPeer else {
            return self.fail(.protocolError, "OPENED on stream \(id), which the peer opened")
        }
        guard !self.streams.values[index].acknowledged else {
            return self.fail(.protocolError, "a second OPENED on stream \(id)")
        }
        self.streams.values[index].acknowledged = true
        return SessionEvents(.acknowledged(id))
    }

    /// spec §5.4, §7.1, §7.3, §12: a CREDIT that raises nothing is an empty frame; one that raises
    /// a byte limit by less than the minimum increment is a glitch.
    private mutating func receiveCredit(_ credit: CreditFrame, now: NIODeadline) -> SessionEvents {
        switch credit {
        case .stream(let id, let limit):
            guard let index = self.streams.index(forKey: id) else {
                if self.isIdle(id) {
                    return self.fail(.protocolError, "CREDIT on stream \(id), which was never opened")
                }
                if self.closedStreams[id] == nil { return self.glitch("CREDIT on forgotten stream \(id)", now: now) }
                return self.noteEmpty(false)
            }
            let previous = self.streams.values[index].send.limit
            guard self.streams.values[index].send.raise(to: limit) else {
                return self.fail(.flowControlError, "CREDIT on stream \(id) lowered the limit to \(limit)")
            }
            let window = UInt64(self.peerSettings!.initialStreamCredit)
            if let limited = self.judgeRaise(from: previous, to: limit, window: window, now: now) { return limited }
            self.scheduleIfReady(id)
            return .none
        case .connection(let limit):
            let previous = self.connectionSend.limit
            guard self.connectionSend.raise(to: limit) else {
                return self.fail(.flowControlError, "connection CREDIT lowered the limit to \(limit)")
            }
            let window = UInt64(self.peerSettings!.initialConnectionCredit)
            if let limited = self.judgeRaise(from: previous, to: limit, window: window, now: now) { return limited }
            if limit > previous { self.wakeConnectionBlocked() }
            return .none
        case .streams(let streamClass, let count):
            let previous = self.peerStreamLimit[streamClass]
            guard count >= previous else {
                return self.fail(
                    .flowControlError, "\(streamClass.name) stream credit lowered from \(previous) to \(count)")
            }
            self.peerStreamLimit[streamClass] = count
            let empty = self.noteEmpty(count == previous)
            guard empty.isEmpty else { return empty }
            let hadRunOut = self.openedLocally[streamClass] >= previous
            return hadRunOut && count > previous ? SessionEvents(.streamCredit(streamClass)) : .none
        }
    }

    /// Schedules the streams that waited for connection credit and whose next frame now fits:
    /// one octet of plain data, or a whole compressed unit (spec §9.3), which may need more than
    /// was left before this CREDIT even when that was not zero. The others keep waiting.
    private mutating func wakeConnectionBlocked() {
        let available = self.connectionSend.available
        var waiting: [StreamID] = []
        for id in self.connectionBlocked {
            guard let index = self.streams.index(forKey: id) else { continue }  // reset meanwhile
            if UInt64(self.streams.values[index].outbound.nextFrameMinimum) <= available {
                self.scheduler.enqueue(id, self.streams.values[index].streamClass)
            } else {
                waiting.append(id)
            }
        }
        self.connectionBlocked = waiting
    }

    /// The run of empty frames and the glitch budget for a byte-limit raise; nil when within both.
    /// A raise is small — a glitch — when it is less than the minimum increment (1,024) and less
    /// than half the window the peer announced for that limit (spec §7.2, §12): a receiver that
    /// renews half its window, or all of it, never trips this, however small its window.
    private mutating func judgeRaise(
        from previous: UInt64, to limit: UInt64, window: UInt64, now: NIODeadline
    ) -> SessionEvents? {
        let empty = self.noteEmpty(limit == previous)
        guard empty.isEmpty else { return empty }
        let smallest = min(self.configuration.abuseLimits.minimumCreditIncrement, window / 2)
        if limit > previous && limit - previous < smallest {
            let glitch = self.glitch("CREDIT raised a limit by \(limit - previous) octets", now: now)
            if !glitch.isEmpty { return glitch }
        }
        return nil
    }

    /// spec §5.6, §7.4, §12: every PING costs a glitch point, so a flood ends the connection.
    private mutating func receivePing(_ ping: PingFrame, now: NIODeadline) -> SessionEvents {
        if !ping.ack {
            let glitch = self.glitch("PING", now: now)
            guard glitch.isEmpty else { return glitch }
            self.control.append(.frame(.ping(PingFrame(ack: true, opaque: ping.opaque))))
            // The one control frame a peer can ask for without another limit bounding it.
            return self.checkControlQueue()
        }
        if let announced = self.announcedGoAway, announced.ping == ping.opaque {
            // Every OPEN the peer sent before it saw our announcement has arrived (spec §10.2 step 1).
            self.finishGoAway(code: announced.code, debug: announced.debug)
        }
        guard let sent = self.outstandingPings.removeValue(forKey: ping.opaque) else {
            return self.glitch("an unmatched PING ACK", now: now)
        }
        let rtt = now - sent
        self.lastRTT = rtt
        self.minimumRTT.add(rtt, at: now)
        if self.rttPing == ping.opaque { self.rttPing = nil }
        if self.applicationPings.remove(ping.opaque) != nil { return SessionEvents(.pong(ping.opaque, rtt: rtt)) }
        return .none
    }

    /// spec §5.7, §10.2.
    private mutating func receiveGoAway(_ goAway: GoAwayFrame) -> SessionEvents {
        if let previous = self.peerGoAway, goAway.lastStreamID > previous {
            return self.fail(.protocolError, "GOAWAY raised its last stream id from \(previous) to \(goAway.lastStreamID)")
        }
        self.peerGoAway = goAway.lastStreamID
        var events = SessionEvents(.goAway(goAway))
        // Our streams above the last id were not processed: refused, safe to retry elsewhere.
        let refused = self.streams.keys.filter { self.role.opens($0) && $0 > goAway.lastStreamID }.sorted()
        for id in refused {
            self.pendingOpens.removeValue(forKey: id)  // an OPEN not sent yet never will be
            self.removeStream(id, ending: .closedByPeer, keepUnconsumed: false)
            events.append(.reset(id, .refusedStream))
        }
        return events
    }
}
