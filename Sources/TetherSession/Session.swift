import NIOCore
import TetherWire

/// The connection state machine of one Tether endpoint (spec §3–§12): pure, clock injected, no I/O.
///
/// The caller — the channel handler, or a test — feeds it decoded frames (``receive(_:now:)``),
/// application calls (``openStream(_:service:metadata:compression:now:)``, ``write(_:_:endMessage:now:)``,
/// ``consume(_:octets:)``, …) and time (``tick(now:)``). Each returns the ``SessionEvents`` the
/// application must learn of. Frames to send are pulled with ``produce(into:now:)`` whenever the
/// transport can take more: control frames first, then streams as the ``Scheduler`` picks them.
///
/// The session's own preface SETTINGS is the first thing ``produce(into:now:)`` yields; the caller
/// writes the magic before it (``Preface/magic``).
public struct Session: Sendable {
    enum Phase: Sendable, Hashable {
        /// Our SETTINGS are queued; the peer's have not arrived (spec §3.1).
        case awaitingSettings
        /// The peer's SETTINGS arrived.
        case active
        /// A connection error; only the GOAWAY reporting it is still sent (spec §10.3).
        case failed(ErrorCode)
    }

    public let configuration: SessionConfiguration
    var phase: Phase = .awaitingSettings
    /// The peer's announced settings, once they arrived.
    public internal(set) var peerSettings: Settings?
    /// The negotiated protocol version (spec §3.4).
    public internal(set) var version: UInt32?
    var settingsAckReceived = false

    // Streams (spec §6).
    var streams: [StreamID: StreamState] = [:]
    var closedStreams: ClosedStreams
    /// Octets delivered on streams that closed normally and the application has not taken yet; they
    /// still hold connection credit (spec §7.2).
    var lingering: [StreamID: UInt64] = [:]
    /// The next id we open; 64 bits so it cannot wrap back to a used id (spec §6.1).
    var nextLocalID: UInt64
    /// OPENs queued and not yet sent.
    var pendingOpens: [StreamID: OpenFrame] = [:]
    /// The highest id the peer opened, 0 for none (spec §6.1).
    var highestPeerID = StreamID.connection

    // Stream-count credit per class (spec §7.3).
    var openedLocally = PerClass<UInt32>(0)
    var peerStreamLimit = PerClass<UInt32>(0)
    var openedByPeer = PerClass<UInt32>(0)
    var grantedToPeer: PerClass<UInt32>
    var streamsCreditQueued = PerClass(false)

    // Connection credit (spec §7.1).
    var connectionSend = SendWindow(limit: 0)
    var connectionReceive: ReceiveWindow
    var connectionCreditQueued = false
    var connectionEpoch: WindowEpoch
    /// Window growth this connection holds from its budget (spec §7.4): the connection window's
    /// and every live stream's, always their sum (``brokenInvariant()`` checks it).
    var budgetUsed: UInt64 = 0
    /// When the connection last received or took DATA octets, for the idle shrink (spec §7.4 step 6).
    var connectionActivity: NIODeadline
    /// The part of the initial connection window reserved in the pool (``WindowTuning/initialWindowFromPool``).
    var initialWindowReserved: UInt64 = 0
    /// Set once ``releaseWindowGrowth()`` gave every window's growth back: nothing grows again.
    var windowGrowthReleased = false
    var minimumRTT = MinimumRTT()
    /// The PING taken for an RTT sample, while it is outstanding.
    var rttPing: UInt64?
    /// Streams with data waiting only for connection credit.
    var connectionBlocked: [StreamID] = []

    // Output (spec §8.2).
    var control = CircularBuffer<ControlItem>(initialCapacity: 16)
    var scheduler = Scheduler()

    // Drain (spec §10.2).
    var localGoAway: StreamID?
    var announcedGoAway: AnnouncedGoAway?
    var peerGoAway: StreamID?
    var drainDeadline: NIODeadline?

    // Keepalive and RTT (spec §10.1, §7.4).
    var lastReceived: NIODeadline
    var keepaliveDeadline: NIODeadline?
    var nextPingPayload: UInt64 = 1
    var outstandingPings: [UInt64: NIODeadline] = [:]
    /// PINGs the application sent (``ping(now:)``), reported with ``SessionEvent/pong(_:rtt:)``.
    var applicationPings = Set<UInt64>()
    /// The latest PING round trip.
    public internal(set) var lastRTT: TimeAmount?

    // Timeouts (spec §12). Entries may be stale; they are checked against the stream when due.
    var acceptDeadlines = CircularBuffer<(StreamID, NIODeadline)>(initialCapacity: 0)
    /// No stream's idle or half-close timeout, nor any window's idle shrink, is due before this;
    /// nil when none is pending. A lower bound: activity only moves those deadlines later, so the
    /// sweep at this time recomputes it exactly (``Session/tick(now:)``).
    var sweepDeadline: NIODeadline?

    /// What happened on this connection, for metrics.
    public internal(set) var counters = SessionCounters()

    // Abuse limits (spec §12).
    var abuse: AbuseLimits
    var emptyFrames = 0
    let prefaceDeadline: NIODeadline
    /// The limit the peer tripped, when the connection ended with ENHANCE_YOUR_CALM.
    public internal(set) var trippedLimit: AbuseLimit?

    public init(configuration: SessionConfiguration, now: NIODeadline) {
        var configuration = configuration
        let tuning = configuration.windowTuning
        if tuning.initialWindowFromPool {
            // spec §7.4: announced below is what the pool could give, over the guaranteed part.
            let wanted = UInt64(configuration.settings.initialConnectionCredit)
            let guaranteed = min(wanted, WindowTuning.guaranteedInitialWindow)
            self.initialWindowReserved = tuning.pool.reserve(wanted - guaranteed)
            configuration.settings.initialConnectionCredit = UInt32(guaranteed + self.initialWindowReserved)
        }
        self.configuration = configuration
        self.closedStreams = ClosedStreams(capacity: configuration.rememberedClosedStreams)
        self.nextLocalID = UInt64(configuration.role.firstStreamID)
        self.grantedToPeer = configuration.settings.initialStreams
        self.connectionReceive = ReceiveWindow(window: UInt64(configuration.settings.initialConnectionCredit))
        self.lastReceived = now
        self.connectionActivity = now
        self.connectionEpoch = WindowEpoch(opened: now)
        self.abuse = configuration.abuseLimits
        self.prefaceDeadline = now + configuration.abuseLimits.prefaceTimeout
        self.control.append(.frame(.settings(.values(configuration.settings.entries))))
    }

    public var role: Role { self.configuration.role }
    var localSettings: Settings { self.configuration.settings }

    /// Whether ``produce(into:now:room:)`` may have a frame to give: control frames wait, or
    /// streams are queued. False means a writing pass would produce nothing — on an idle
    /// connection's timer ticks and keepalive reads, the pass and its buffer are skipped.
    public var mayProduce: Bool { !self.control.isEmpty || (self.isActive && !self.scheduler.isEmpty) }

    /// Whether the peer's SETTINGS arrived and no connection error happened.
    public var isActive: Bool { self.phase == .active }

    /// Whether the connection failed; the caller closes it once ``produce(into:now:)`` returns nil.
    public var hasFailed: Bool {
        if case .failed = self.phase { return true }
        return false
    }

    /// Whether a GOAWAY was sent or received (spec §10.2).
    public var isDraining: Bool { self.localGoAway != nil || self.announcedGoAway != nil || self.peerGoAway != nil }

    /// A drain has finished: no stream is left. The caller closes the transport once
    /// ``produce(into:)`` returns nil (spec §10.2 step 4).
    public var isDrained: Bool {
        (self.localGoAway != nil || self.peerGoAway != nil) && self.streams.isEmpty && !self.hasFailed
    }

    /// Live streams (not yet closed or reset).
    public var activeStreamCount: Int { self.streams.count }

    /// Live streams by class (a walk over them: for status pages, not the data path).
    public var activeStreamsByClass: PerClass<Int> {
        self.streams.values.reduce(into: PerClass(0)) { $0[$1.streamClass] += 1 }
    }

    /// Whether a stream is live: opened, and not yet closed or reset (spec §6.3).
    public func isLive(_ id: StreamID) -> Bool { self.streams[id] != nil }

    /// The GOAWAY to send on a connection error: the code and the highest peer stream processed.
    /// Everything else queued is dropped; nothing but this frame is sent again (spec §10.3).
    mutating func fail(_ code: ErrorCode, _ reason: String) -> SessionEvents {
        guard !self.hasFailed else { return .none }
        self.phase = .failed(code)
        self.control.removeAll()
        // A later GOAWAY must not raise the last stream id (spec §10.2): after a drain began, later
        // peer streams were refused, not processed.
        let last = min(self.highestPeerID, self.localGoAway ?? self.highestPeerID)
        self.control.append(.frame(.goAway(GoAwayFrame(lastStreamID: last, code: code, debug: reason))))
        self.scheduler = Scheduler()
        self.connectionBlocked.removeAll()
        self.counters.connectionErrors += 1
        return SessionEvents(.connectionError(code, reason))
    }

    /// This side refuses the connection (spec §10.3, an admission check): GOAWAY `REFUSED` with
    /// `reason`, and nothing more is processed.
    public mutating func refuse(reason: String) -> SessionEvents {
        self.fail(.refused, reason)
    }

    /// Reports a frame the decoder rejected (spec §10.3): the connection fails with its code.
    public mutating func decodingFailed(_ error: WireError) -> SessionEvents {
        self.fail(error.code, error.description)
    }

    /// Whether `id` names a stream that was never opened (spec §6.2: idle).
    func isIdle(_ id: StreamID) -> Bool {
        if self.role.opens(id) {
            return UInt64(id.rawValue) >= self.nextLocalID
        }
        return id > self.highestPeerID
    }

    /// Removes a live stream (spec §6.3 closed or reset), remembering how it ended, returning its
    /// stream-count credit to the peer and its undelivered octets' connection credit.
    ///
    /// - Parameter keepUnconsumed: a normal close keeps octets the application has not taken
    ///   charged to the connection until it takes them; a reset drops them (spec §6.5, §7.2).
    mutating func removeStream(_ id: StreamID, ending: ClosedStreams.Ending, keepUnconsumed: Bool) {
        guard let stream = self.streams.removeValue(forKey: id) else { return }
        self.closedStreams.remember(id, ending)
        self.giveBack(stream.epoch.granted)
        let unconsumed = stream.receive.unconsumed
        if unconsumed > 0 {
            if keepUnconsumed {
                self.lingering[id] = unconsumed
            } else {
                self.consumeConnection(Int(unconsumed), now: nil)
            }
        }
        if stream.openedByPeer {
            self.grantedToPeer[stream.streamClass] += 1
            if !self.streamsCreditQueued[stream.streamClass] {
                self.streamsCreditQueued[stream.streamClass] = true
                self.control.append(.streamsCredit(stream.streamClass))
            }
        }
    }

    /// Ends a live stream with RESET (spec §6.5). The caller reports the event if the application
    /// did not ask for it.
    mutating func resetStream(_ id: StreamID, _ code: ErrorCode) {
        guard let stream = self.streams[id] else { return }
        self.control.append(.frame(.reset(ResetFrame(streamID: id, code: code, finalSize: stream.send.sent))))
        self.counters.resetsSent += 1
        self.removeStream(id, ending: .resetByUs, keepUnconsumed: false)
    }

    /// Connection-level octets taken (or discarded); queues a connection CREDIT when due (spec §7.2),
    /// growing the connection window when it limited the sender (spec §7.4). Discarded octets
    /// (`now` nil) return credit without counting toward tuning.
    mutating func consumeConnection(_ octets: Int, now: NIODeadline?) {
        if let now { self.connectionActivity = now }
        guard self.connectionReceive.consume(octets, early: self.renewsCreditEarly) else { return }
        if let now {
            let initial = UInt64(self.localSettings.initialConnectionCredit)
            let maximum = self.configuration.windowTuning.maxConnectionWindow
            let view = self.tuningView
            let granted = Self.tune(
                &self.connectionReceive, epoch: &self.connectionEpoch, initial: initial, maximum: maximum, now: now,
                view: view)
            self.booked(granted, now: now)
        }
        self.connectionReceive.advertise()
        if !self.connectionCreditQueued && !self.hasFailed {
            self.connectionCreditQueued = true
            self.control.append(.connectionCredit)
        }
    }

    /// Puts a stream in the scheduler if it has something it can send now.
    mutating func scheduleIfReady(_ id: StreamID) {
        guard self.isActive, let index = self.streams.index(forKey: id) else { return }
        let ready = self.streams.inPlace(index) { stream -> (creditFree: Bool, needed: UInt64, StreamClass)? in
            guard !stream.isQueued else { return nil }
            let creditFree = stream.outbound.hasCreditFreeWork
            let needed = UInt64(stream.outbound.nextFrameMinimum)
            guard creditFree || (stream.outbound.hasData && stream.send.available >= needed) else { return nil }
            stream.isQueued = true
            return (creditFree, needed, stream.streamClass)
        }
        guard let (creditFree, needed, streamClass) = ready else { return }
        if creditFree || self.connectionSend.available >= needed {
            self.scheduler.enqueue(id, streamClass)
        } else {
            self.connectionBlocked.append(id)
        }
    }
}

/// An entry of the control queue (spec §8.2 CONTROL). Credit entries are resolved to the current
/// limit when written, so one queued update carries everything taken until then.
enum ControlItem: Sendable {
    case frame(Frame)
    /// A stream's OPEN, in opening order so ids increase on the wire (spec §6.1, §8.2).
    case open(StreamID)
    case connectionCredit
    case streamCredit(StreamID)
    case streamsCredit(StreamClass)
}

/// Counts of what happened on a connection, for metrics and for tests that count instead of time.
public struct SessionCounters: Hashable, Sendable {
    public var framesReceived = 0
    /// PING frames, ACKs included: the keepalive's share of `framesReceived` (spec §10.1).
    public var pingsReceived = 0
    public var unknownFrames = 0
    public var dataOctetsReceived = 0
    public var dataOctetsSent = 0
    public var streamsOpenedByPeer = 0
    public var streamsOpenedLocally = 0
    public var resetsReceived = 0
    public var resetsSent = 0
    public var connectionErrors = 0
    /// Frames on streams we already forgot, unmatched PING ACKs and similar (spec §12 glitches).
    public var glitches = 0
    /// The same by class (the relays' `/metrics`): streams opened, DATA octets each way, and
    /// credit stalls — a stream with data queued and no credit left, its own or the connection's.
    public var streamsOpenedByPeerByClass = PerClass(0)
    public var streamsOpenedLocallyByClass = PerClass(0)
    public var dataOctetsReceivedByClass = PerClass(0)
    public var dataOctetsSentByClass = PerClass(0)
    public var creditStallsByClass = PerClass(0)

    /// All zero: a connection before it counted anything.
    public init() {}
}

/// A graceful GOAWAY sent with ``StreamID/announcingDrain``, and the PING whose ACK sends the final one.
struct AnnouncedGoAway {
    var ping: UInt64
    var code: ErrorCode
    var debug: String
}

extension StreamID {
    /// The last stream id of a GOAWAY that announces a drain (spec §10.2 step 1): every stream the
    /// peer opened so far may still be processed.
    public static let announcingDrain = StreamID(UInt32.max)
}
