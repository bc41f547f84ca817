import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import TetherPolicy
import TetherWire

/// Puts a ``Policy`` in force on connections (spec/POLICY.md §7).
///
/// The edge enforces the customer's policy before anything leaves the site: streams it opens and
/// streams the plane opens are checked, OPEN metadata and METADATA messages are filtered before
/// compression and before they are queued. The hub re-checks the same rules on what arrives.
/// Every refusal and drop is counted (swift-metrics) and written to the audit log, which names
/// rules, services and paths and never a value. Opaque streams are audited when they end.
///
/// The policy changes only through ``reload(_:)``, which the owner of the file calls; nothing the
/// peer sends reaches it. A reload applies to open streams at once: those it now forbids are reset
/// with POLICY_DENIED, the others filter with the new rules from their next message.
public final class PolicyEnforcer: Sendable {
    /// Which end of the tunnel applies the policy.
    public enum Side: String, Sendable {
        /// On the customer's node: filters what leaves.
        case edge
        /// In the plane: re-checks what arrives (defence in depth).
        case hub
    }

    public let side: Side
    let audit: Logger
    private let state: NIOLockedValueBox<State>
    private let metricsFactory: any MetricsFactory
    private let counters = NIOLockedValueBox<[CounterKey: Counter]>([:])

    private struct State {
        var policy: Policy
        var connections: [ObjectIdentifier: NIOLoopBound<Registration>] = [:]
    }

    /// A connection, touched only on its event loop.
    private final class Registration {
        weak var handler: TetherConnectionHandler?

        init(_ handler: TetherConnectionHandler) {
            self.handler = handler
        }
    }

    public init(
        side: Side, policy: Policy, auditLogger: Logger = Logger(label: "tether.audit"),
        metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.side = side
        self.audit = auditLogger
        self.metricsFactory = metricsFactory
        self.state = NIOLockedValueBox(State(policy: policy))
    }

    /// The policy in force.
    public var policy: Policy { self.state.withLockedValue { $0.policy } }

    /// Puts `policy` in force on every connection: streams it forbids are reset with
    /// POLICY_DENIED, the rest follow its rules from their next message.
    public func reload(_ policy: Policy) {
        let registrations = self.state.withLockedValue { state in
            state.policy = policy
            return Array(state.connections.values)
        }
        self.audit.notice("policy reloaded", metadata: ["event": "reload", "side": "\(self.side)"])
        for registration in registrations {
            registration.eventLoop.execute {
                registration.value.handler?.policyChanged()
            }
        }
    }

    /// Reads the policy file again and puts it in force (spec/POLICY.md §7.3). A file that does
    /// not load throws, and the policy in force stays as it was.
    public func reload(fromFile path: String) throws(PolicyError) {
        let policy: Policy
        do {
            policy = try PolicyFile.load(path: path)
        } catch {
            self.audit.error("policy reload failed; the policy in force is unchanged", metadata: ["event": "reload-failed", "error": "\(error)"])
            throw error
        }
        self.reload(policy)
    }

    // MARK: Connections

    func register(_ handler: TetherConnectionHandler, on eventLoop: any EventLoop) {
        self.state.withLockedValue {
            $0.connections[ObjectIdentifier(handler)] = NIOLoopBound(Registration(handler), eventLoop: eventLoop)
        }
    }

    func unregister(_ handler: TetherConnectionHandler) {
        _ = self.state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(handler)) }
    }

    /// Who opens a stream, seen from the site: the edge opening is toward the plane.
    func direction(openedLocally: Bool) -> PolicyDirection {
        (self.side == .edge) == openedLocally ? .toPlane : .fromPlane
    }

    /// The decision on a stream, counted and audited when it is a refusal. On success, the
    /// The OPEN keys of a LOGS stream the plane opens (spec/LOGS.md §2).
    public static let logsKeys: Set<String> = ["logs.cursor", "logs.follow", "logs.file"]

    /// stream's policy state and its OPEN metadata with what the rule does not allow removed.
    func admit(
        openedLocally: Bool, id: StreamID?, service: String, streamClass: StreamClass, metadata: OpenMetadata,
        peer: String
    ) -> Result<(StreamPolicy, OpenMetadata), TetherError> {
        let direction = self.direction(openedLocally: openedLocally)
        switch self.policy.decide(direction, service: service, class: PolicyClass(streamClass)) {
        case .refused(let rule, let reason):
            self.count("tether_policy_refused_streams_total", ["direction": direction.rawValue, "rule": rule, "reason": reason])
            self.audit.notice(
                "policy refused a stream",
                metadata: [
                    "event": "refused", "side": "\(self.side)", "peer": "\(peer)", "direction": "\(direction.rawValue)",
                    "stream": "\(id.map { "\($0.rawValue)" } ?? "-")", "service": "\(service)",
                    "class": "\(streamClass)", "rule": "\(rule)", "reason": "\(reason)",
                ])
            return .failure(
                TetherError(
                    .policyDenied, errorCode: .policyDenied,
                    "the policy refuses \(direction.rawValue) stream \"\(service)\" (\(streamClass)): \(reason), rule \(rule)"))
        case .allowed(let rule):
            var kept = OpenMetadata()
            var removed: [String] = []
            // The plane user of a stream the plane opens stays: it is for the site's audit
            // (spec/PROTOCOL.md §5.2.1) and leaves nothing.
            let user = direction == .fromPlane ? metadata[OpenMetadata.userKey] : nil
            // So do a LOGS stream's cursor and follow flag (spec/LOGS.md §2): they steer what the
            // allowed source sends and carry nothing out.
            let steering = direction == .fromPlane && streamClass == .logs ? Self.logsKeys : []
            for entry in metadata.entries {
                if rule.allowsOpenMetadata(key: entry.key) || (user != nil && entry.key == OpenMetadata.userKey)
                    || steering.contains(entry.key)
                {
                    kept[entry.key] = entry.value
                } else {
                    removed.append(entry.key)
                }
            }
            if !removed.isEmpty {
                self.count("tether_policy_removed_open_metadata_total", ["rule": rule.name], by: removed.count)
                self.audit.info(
                    "policy removed OPEN metadata",
                    metadata: [
                        "event": "removed", "side": "\(self.side)", "peer": "\(peer)", "service": "\(service)",
                        "rule": "\(rule.name)", "keys": "\(removed.joined(separator: ","))",
                    ])
            }
            let stream = StreamPolicy(
                enforcer: self, rule: rule, direction: direction, service: service, streamClass: streamClass,
                peer: peer, openedLocally: openedLocally, user: user.map { String(buffer: $0) })
            if self.side == .edge && direction == .fromPlane {
                // spec/PROTOCOL.md §5.2.1: every stream the plane opens is audited, with who asked.
                self.audit.notice(
                    "the plane opened a stream",
                    metadata: [
                        "event": "plane-opened", "side": "\(self.side)", "peer": "\(peer)",
                        "stream": "\(id.map { "\($0.rawValue)" } ?? "-")", "service": "\(service)",
                        "class": "\(streamClass)", "rule": "\(rule.name)", "user": "\(stream.user ?? "-")",
                    ])
            }
            return .success((stream, kept))
        }
    }

    // MARK: Metrics

    private struct CounterKey: Hashable {
        var label: String
        var dimensions: [String: String]
    }

    func count(_ label: String, _ dimensions: [String: String], by amount: Int = 1) {
        var all = dimensions
        all["side"] = self.side.rawValue
        let key = CounterKey(label: label, dimensions: all)
        let counter = self.counters.withLockedValue { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: label, dimensions: all.sorted { $0.key < $1.key }, factory: self.metricsFactory)
            counters[key] = counter
            return counter
        }
        counter.increment(by: amount)
    }
}

extension PolicyClass {
    /// The class as the policy names it.
    public init(_ streamClass: StreamClass) {
        switch streamClass {
        case .command: self = .command
        case .metadata: self = .metadata
        case .logs: self = .logs
        case .bulk: self = .bulk
        }
    }
}

/// One stream under a policy: its rule (replaced on reload), the METADATA message being
/// gathered, and the octets each way for the audit of opaque streams. Used from the writer's or
/// reader's task and from the event loop, so behind locks — two of them: `message` is held
/// across a filter run and taken only by whoever filters; `state` is held for a few assignments
/// and is all the event loop takes (octet counts, a reload's new rule), so the loop never waits
/// for a filter running in a writer's task.
public final class StreamPolicy: Sendable {
    let enforcer: PolicyEnforcer
    let direction: PolicyDirection
    let service: String
    let streamClass: StreamClass
    let peer: String
    let openedLocally: Bool
    /// The plane user who opened it (`tether.user`, spec/PROTOCOL.md §5.2.1), for the audit.
    let user: String?
    private let state: NIOLockedValueBox<State>
    private let message: NIOLockedValueBox<Message>

    private struct State {
        var rule: PolicyRule
        var octetsSent = 0
        var octetsReceived = 0
        var ended = false
    }

    /// The METADATA message being gathered.
    private struct Message {
        var pending = ByteBuffer()
        /// The message grew past the limit: the rest of it is discarded, then it is dropped.
        var overflowed = false
    }

    init(
        enforcer: PolicyEnforcer, rule: PolicyRule, direction: PolicyDirection, service: String,
        streamClass: StreamClass, peer: String, openedLocally: Bool, user: String? = nil
    ) {
        self.user = user
        self.enforcer = enforcer
        self.direction = direction
        self.service = service
        self.streamClass = streamClass
        self.peer = peer
        self.openedLocally = openedLocally
        self.state = NIOLockedValueBox(State(rule: rule))
        self.message = NIOLockedValueBox(Message())
    }

    /// The rule in force for the stream.
    public var rule: PolicyRule { self.state.withLockedValue { $0.rule } }

    /// Whether this side filters what it writes (the edge, on METADATA streams).
    public var filtersOutbound: Bool { self.enforcer.side == .edge && self.streamClass == .metadata }
    /// Whether this side filters what it reads (the hub, on METADATA streams).
    public var filtersInbound: Bool { self.enforcer.side == .hub && self.streamClass == .metadata }

    /// What became of a piece of a METADATA stream.
    public enum Outcome: Sendable {
        /// Gathered; the message is not complete yet.
        case incomplete
        /// A whole message, filtered.
        case message(ByteBuffer)
        /// The message was dropped whole.
        case dropped(TetherError)
    }

    /// Gathers `bytes` into the current message and filters it when `endMessage` completes it
    /// (spec/POLICY.md §5). Messages over the limit are dropped whole, without being held.
    public func filter(_ bytes: ByteBuffer, endMessage: Bool) -> Outcome {
        let rule = self.rule  // the rule in force when the piece arrived; a reload swaps it
        let result = self.message.withLockedValue { message -> Result<(ByteBuffer, RemovedFields), DropReason>? in
            let filter = rule.fields!
            if !message.overflowed {
                if message.pending.readableBytes + bytes.readableBytes > filter.maxBytes {
                    message.overflowed = true
                    message.pending = ByteBuffer()
                } else {
                    var bytes = bytes
                    message.pending.writeBuffer(&bytes)
                }
            }
            guard endMessage else { return nil }
            defer {
                message.pending = ByteBuffer()
                message.overflowed = false
            }
            if message.overflowed { return .failure(.tooLarge(limit: filter.maxBytes)) }
            var output: [UInt8] = []
            let result = message.pending.withUnsafeReadableBytes { input in
                Result { () throws(DropReason) in try filter.filter(input, into: &output) }
            }
            return result.map { (ByteBuffer(bytes: output), $0) }
        }
        switch result {
        case nil:
            return .incomplete
        case .success(let (message, removed)):
            if removed.count > 0 {
                self.enforcer.count("tether_policy_removed_fields_total", ["rule": rule.name], by: removed.count)
                self.enforcer.audit.info(
                    "policy removed fields",
                    metadata: self.auditMetadata(rule, event: "removed").merging(
                        ["count": "\(removed.count)", "paths": "\(removed.paths.joined(separator: ","))"]) { $1 })
            }
            return .message(message)
        case .failure(let reason):
            return .dropped(self.dropped(reason.name, detail: reason.description, rule: rule))
        }
    }

    /// The stream ended inside a message: what was gathered is dropped.
    public func endedInsideMessage() {
        let gathered = self.message.withLockedValue { message in
            let gathered = message.pending.readableBytes > 0 || message.overflowed
            message.pending = ByteBuffer()
            message.overflowed = false
            return gathered
        }
        if gathered { _ = self.dropped("truncated", detail: "the stream ended inside a message", rule: self.rule) }
    }

    private func dropped(_ reason: String, detail: String, rule: PolicyRule) -> TetherError {
        self.enforcer.count("tether_policy_dropped_messages_total", ["rule": rule.name, "reason": reason])
        self.enforcer.audit.notice(
            "policy dropped a message",
            metadata: self.auditMetadata(rule, event: "dropped").merging(["reason": "\(reason)", "detail": "\(detail)"]) { $1 })
        return TetherError(.policyDenied, errorCode: .policyDenied, "the policy dropped a message on \"\(self.service)\": \(detail)")
    }

    /// A reload decides again; false when the stream is now forbidden (audited and counted here).
    func reconsider(_ policy: Policy, id: StreamID) -> Bool {
        switch policy.decide(self.direction, service: self.service, class: PolicyClass(self.streamClass)) {
        case .allowed(let rule):
            self.state.withLockedValue { $0.rule = rule }
            return true
        case .refused(let rule, let reason):
            self.enforcer.count(
                "tether_policy_reset_streams_total", ["direction": self.direction.rawValue, "rule": rule, "reason": reason])
            self.enforcer.audit.notice(
                "policy reload reset a stream",
                metadata: [
                    "event": "reset", "side": "\(self.enforcer.side)", "peer": "\(self.peer)", "stream": "\(id.rawValue)",
                    "service": "\(self.service)", "class": "\(self.streamClass)", "rule": "\(rule)", "reason": "\(reason)",
                ])
            return false
        }
    }

    func sent(_ octets: Int) {
        self.state.withLockedValue { $0.octetsSent += octets }
    }

    func received(_ octets: Int) {
        self.state.withLockedValue { $0.octetsReceived += octets }
    }

    /// The stream is over: an opaque one, and on the edge every one the plane opened, is audited
    /// with what it carried, once.
    func ended(id: StreamID, how: String) {
        let summary = self.state.withLockedValue { state -> (PolicyRule, Int, Int)? in
            guard !state.ended else { return nil }
            state.ended = true
            return (state.rule, state.octetsSent, state.octetsReceived)
        }
        let openedByThePlane = self.enforcer.side == .edge && self.direction == .fromPlane
        guard let (rule, sent, received) = summary, rule.isOpaque || openedByThePlane else { return }
        var metadata = self.auditMetadata(rule, event: rule.isOpaque ? "opaque-stream" : "plane-stream")
        metadata["stream"] = "\(id.rawValue)"
        metadata["opened-by"] = "\(self.openedLocally ? "this side" : "peer")"
        metadata["octets-sent"] = "\(sent)"
        metadata["octets-received"] = "\(received)"
        metadata["end"] = "\(how)"
        if openedByThePlane { metadata["user"] = "\(self.user ?? "-")" }
        self.enforcer.audit.info(rule.isOpaque ? "opaque stream ended" : "stream the plane opened ended", metadata: metadata)
    }

    private func auditMetadata(_ rule: PolicyRule, event: String) -> Logger.Metadata {
        [
            "event": "\(event)", "side": "\(self.enforcer.side)", "peer": "\(self.peer)",
            "direction": "\(self.direction.rawValue)", "service": "\(self.service)", "class": "\(self.streamClass)",
            "rule": "\(rule.name)",
        ]
    }
}
