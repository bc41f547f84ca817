import NIOCore
import TetherWire

extension Session {
    /// Opens a stream toward `service` (spec §5.2, §6.2). The OPEN is sent ahead of the stream's
    /// data; there is no acknowledgement to wait for.
    public mutating func openStream(
        _ streamClass: StreamClass,
        service: String,
        metadata: OpenMetadata = OpenMetadata(),
        compression: CompressionAlgorithm = .none,
        now: NIODeadline
    ) -> Result<StreamID, OpenError> {
        switch self.phase {
        case .awaitingSettings: return .failure(.notReady)
        case .failed: return .failure(.closed)
        case .active: break
        }
        let peer = self.peerSettings!
        guard !self.isDraining else { return .failure(.draining) }
        guard peer.compression.contains(compression) else { return .failure(.compressionUnsupported) }
        guard self.nextLocalID <= UInt64(self.role.lastStreamID.rawValue) else {
            return .failure(.draining)  // spec §6.1: no id left
        }
        let open = OpenFrame(
            streamID: StreamID(UInt32(self.nextLocalID)), streamClass: streamClass, compression: compression,
            service: service, metadata: metadata)
        do {
            try open.validate(maxOpenSize: Int(peer.maxOpenSize))
        } catch {
            return .failure(.invalid(error))
        }
        guard self.openedLocally[streamClass] < self.peerStreamLimit[streamClass] else {
            return .failure(.noCredit)
        }

        let id = open.streamID
        self.nextLocalID += 2
        self.openedLocally[streamClass] += 1
        self.counters.streamsOpenedLocally += 1
        self.counters.streamsOpenedLocallyByClass[streamClass] += 1
        var stream = StreamState(
            id: id,
            streamClass: streamClass,
            compression: compression,
            openedByPeer: false,
            accepted: true,
            lastActivity: now,
            send: SendWindow(limit: UInt64(peer.initialStreamCredit)),
            receive: ReceiveWindow(window: UInt64(self.localSettings.initialStreamCredit)),
            epoch: WindowEpoch(opened: now)
        )
        stream.outbound.openPending = true
        self.pendingOpens[id] = open
        self.streams[id] = stream
        self.armIdleTimeout(now: now)
        self.control.append(.open(id))  // with CONTROL, in order (spec §8.2)
        return .success(id)
    }

    /// Whether fewer than 65,536 stream ids remain to us: time to replace the connection (spec §6.1).
    public var isNearStreamIDExhaustion: Bool {
        // Ids left: (last + 2 − next) / 2.
        UInt64(self.role.lastStreamID.rawValue) + 2 < self.nextLocalID + 2 * 65_536
    }

    /// Buffers octets to send on a stream (spec §5.1). `endMessage` marks the last octet as the end
    /// of a message (END_MSG). Returns the stream's buffered octets.
    ///
    /// The session takes whatever it is given; bounding memory is the writer's part (spec §7.2): it
    /// writes at most half of ``SessionConfiguration/sendBufferLimit`` at a time, only while the
    /// buffered octets plus the write fit the limit, and otherwise waits for ``Produced/writable``.
    public mutating func write(
        _ id: StreamID, _ bytes: ByteBuffer, endMessage: Bool = false, now: NIODeadline
    ) -> Result<Int, StreamWriteError> {
        self.write(id, bytes, endMessage: endMessage, compression: [], now: now)
    }

    /// Buffers one compressed unit (spec §9.3): the deflated, sync-flushed octets of what the
    /// application wrote, without the trailing `00 00 FF FF`. It goes whole in one COMPRESSED frame
    /// (with RESET_CONTEXT when `resetContext`). It must not exceed ``maxCompressedUnit(_:)``.
    public mutating func writeCompressed(
        _ id: StreamID, _ unit: ByteBuffer, endMessage: Bool = false, resetContext: Bool = false, now: NIODeadline
    ) -> Result<Int, StreamWriteError> {
        guard let stream = self.streams[id], self.mayCompress(stream), unit.readableBytes > 0,
            unit.readableBytes <= self.maxCompressedUnit(id)
        else {
            return .failure(.compressionNotAllowed)
        }
        var flags: DataFrame.Flags = [.compressed]
        if resetContext { flags.insert(.resetContext) }
        return self.write(id, unit, endMessage: endMessage, compression: flags, now: now)
    }

    /// The largest compressed unit a stream can send: one frame that fits one TLS record (spec
    /// §2.1: a unit goes whole, so it must fit wherever the transport cuts frames to records,
    /// whatever larger MAX_FRAME_PAYLOAD the peer announced), and no more than the peer's initial
    /// stream and connection credit, so a unit can always be sent.
    public func maxCompressedUnit(_ id: StreamID) -> Int {
        guard let peer = self.peerSettings else { return 0 }
        return min(
            Int(Settings.minMaxFramePayload), Int(peer.maxFramePayload), Int(peer.initialStreamCredit),
            Int(peer.initialConnectionCredit))
    }

    /// Whether this side may set COMPRESSED on a stream (spec §9.2): the stream has an algorithm,
    /// and the peer can decompress it (for our own streams it announced it, or we would not have
    /// opened it so).
    public func mayCompress(_ id: StreamID) -> Bool {
        self.streams[id].map(self.mayCompress) ?? false
    }

    private func mayCompress(_ stream: StreamState) -> Bool {
        stream.compression != .none && (self.peerSettings?.compression.contains(stream.compression) ?? false)
    }

    private mutating func write(
        _ id: StreamID, _ bytes: ByteBuffer, endMessage: Bool, compression: DataFrame.Flags, now: NIODeadline
    ) -> Result<Int, StreamWriteError> {
        guard let index = self.streams.index(forKey: id) else { return .failure(.closed) }
        let buffered = self.streams.inPlace(index) { stream -> Int? in
            guard stream.phase != .halfClosedLocal, !stream.outbound.finRequested else { return nil }
            if bytes.readableBytes > 0 || endMessage {
                stream.outbound.append(bytes, endsMessage: endMessage, compression: compression)
                stream.lastActivity = now
            }
            return stream.outbound.bufferedBytes
        }
        guard let buffered else { return .failure(.closed) }
        if bytes.readableBytes > 0 || endMessage { self.scheduleIfReady(id) }
        return .success(buffered)
    }

    /// Octets delivered on a stream and not yet taken by the application (spec §7.2).
    public func unconsumedOctets(_ id: StreamID) -> Int {
        Int(self.streams[id]?.receive.unconsumed ?? self.lingering[id] ?? 0)
    }

    /// A stream's receive window now: what the peer may have in flight to it (spec §7.2, as
    /// grown by §7.4).
    package func receiveWindow(_ id: StreamID) -> Int {
        Int(self.streams[id]?.receive.window ?? 0)
    }

    /// Octets buffered and not yet sent on a stream. Mutating only to read in place: writers ask
    /// it before every write.
    public mutating func bufferedOctets(_ id: StreamID) -> Int {
        guard let index = self.streams.index(forKey: id) else { return 0 }
        return self.streams.inPlace(index) { $0.outbound.bufferedBytes }
    }

    /// Half-closes a stream: FIN follows the buffered data (spec §6.4).
    public mutating func finish(_ id: StreamID) -> Result<Void, StreamWriteError> {
        guard let index = self.streams.index(forKey: id),
            self.streams.values[index].phase != .halfClosedLocal
        else {
            return .failure(.closed)
        }
        self.streams.values[index].outbound.finRequested = true
        self.scheduleIfReady(id)
        return .success(())
    }

    /// Resets a stream (spec §6.5): unsent data is dropped, undelivered data released. Also releases
    /// octets of a closed stream the application will no longer read.
    public mutating func reset(_ id: StreamID, code: ErrorCode) {
        if self.streams[id] != nil {
            self.resetStream(id, code)
        } else if let octets = self.lingering.removeValue(forKey: id) {
            self.consumeConnection(Int(octets), now: nil)
        }
    }

    /// The application took an inbound stream; its open timeout no longer applies (spec §6.2).
    public mutating func accept(_ id: StreamID) {
        if let index = self.streams.index(forKey: id) {
            self.streams.values[index].accepted = true
        }
    }

    /// The application accepted an inbound stream and reached what it names: OPENED tells the
    /// opener, when its SETTINGS announced `OPEN_ACK` (spec §5.8) — a peer that did not may not
    /// know the frame. Once per stream; nothing for a stream no longer live or one we opened.
    public mutating func acknowledge(_ id: StreamID) {
        guard let index = self.streams.index(forKey: id), self.streams.values[index].openedByPeer,
            !self.streams.values[index].acknowledged
        else { return }
        self.streams.values[index].accepted = true
        self.streams.values[index].acknowledged = true
        if self.peerSettings?.openAcknowledgements == true { self.control.append(.frame(.opened(id))) }
    }

    /// The application refuses an inbound stream (spec §6.2).
    ///
    /// A refusal for what the peer asked — `UNKNOWN_SERVICE`, `POLICY_DENIED` — counts toward the
    /// reset rate (spec §12): a peer that makes us refuse stream after stream is ended with
    /// ENHANCE_YOUR_CALM, reported in the returned events. A refusal for our own state —
    /// `REFUSED_STREAM` (draining, over a local limit), `CONNECT_ERROR` (the backend is down), any
    /// other code — never counts: a client retrying against a down backend must not take every
    /// other stream of the connection down with it.
    @discardableResult
    public mutating func refuse(_ id: StreamID, code: ErrorCode, now: NIODeadline) -> SessionEvents {
        guard self.streams[id] != nil else { return .none }
        self.reset(id, code: code)
        return code.refusesWhatThePeerAsked ? self.countReset(now: now) : .none
    }

    /// A stream error the peer caused that the application found — data that does not inflate,
    /// a decompression limit (spec §9.4): the stream is reset with `code`, and it counts toward
    /// the peer's reset rate (spec §12), reported in the returned events.
    @discardableResult
    public mutating func streamError(_ id: StreamID, code: ErrorCode, now: NIODeadline) -> SessionEvents {
        guard self.streams[id] != nil else { return .none }
        self.reset(id, code: code)
        return self.countReset(now: now)
    }

    /// The application took `octets` delivered on a stream — read them, or a relay's backend write
    /// completed. Only now is credit returned (spec §7.2), and windows tuned (spec §7.4).
    public mutating func consume(_ id: StreamID, octets: Int, now: NIODeadline) {
        guard octets > 0 else { return }
        if let index = self.streams.index(forKey: id) {
            let early = self.renewsCreditEarly
            let due = self.streams.inPlace(index) { stream in
                stream.lastActivity = now
                // No credit after the peer's FIN: it sends nothing more.
                return stream.receive.consume(octets, early: early) && stream.phase != .halfClosedRemote
            }
            if due { self.advertiseStreamWindow(at: index, id: id, now: now) }
            self.refreshRTTIfDue(now: now)
            self.consumeConnection(octets, now: now)
        } else if let lingering = self.lingering[id] {
            let taken = min(UInt64(octets), lingering)
            if taken == lingering {
                self.lingering.removeValue(forKey: id)
            } else {
                self.lingering[id] = lingering - taken
            }
            self.consumeConnection(Int(taken), now: nil)
        }
    }

    /// Ends the stream window's epoch (maybe growing it) and queues its CREDIT (spec §7.2, §7.4).
    private mutating func advertiseStreamWindow(
        at index: Dictionary<StreamID, StreamState>.Index, id: StreamID, now: NIODeadline
    ) {
        let initial = UInt64(self.localSettings.initialStreamCredit)
        let maximum = self.configuration.windowTuning.maxStreamWindow
        let view = self.tuningView
        let hasFailed = self.hasFailed
        let (granted, queueCredit) = self.streams.inPlace(index) { stream -> (UInt64, Bool) in
            let granted = Self.tune(
                &stream.receive, epoch: &stream.epoch, initial: initial, maximum: maximum, now: now, view: view)
            stream.receive.advertise()
            guard !stream.creditQueued && !hasFailed else { return (granted, false) }
            stream.creditQueued = true
            return (granted, true)
        }
        self.booked(granted, now: now)
        if queueCredit { self.control.append(.streamCredit(id)) }
    }

    /// Starts a drain (spec §10.2): no new streams either way; the transport closes when the last
    /// stream finishes or the grace expires. A graceful one (`NO_ERROR`) is announced first —
    /// GOAWAY with the largest last stream id, and a PING — so that OPENs the peer sent before it
    /// learned of the drain are processed; the PING's ACK, which follows them, sends the final
    /// GOAWAY with the highest peer stream processed. Any other code goes final at once.
    public mutating func goAway(code: ErrorCode = .noError, debug: String = "", now: NIODeadline) {
        guard !self.hasFailed, self.localGoAway == nil, self.announcedGoAway == nil else { return }
        self.drainDeadline = now + self.configuration.goAwayGrace
        if code == .noError && self.peerSettings != nil {
            self.control.append(.frame(.goAway(GoAwayFrame(lastStreamID: .announcingDrain, code: code, debug: debug))))
            self.announcedGoAway = AnnouncedGoAway(ping: self.sendPing(now: now), code: code, debug: debug)
        } else {
            self.finishGoAway(code: code, debug: debug)
        }
    }

    /// The final GOAWAY (spec §10.2 step 1): later peer OPENs are refused.
    mutating func finishGoAway(code: ErrorCode, debug: String) {
        self.announcedGoAway = nil
        self.localGoAway = self.highestPeerID
        self.control.append(.frame(.goAway(GoAwayFrame(lastStreamID: self.highestPeerID, code: code, debug: debug))))
    }
}
