/// The stream classes as the policy names them (spec/POLICY.md §3; spec/PROTOCOL.md §8.1).
public enum PolicyClass: String, Sendable, Hashable, CaseIterable, Codable {
    case command
    case metadata
    case logs
    case bulk
}

/// Who opens a stream, seen from the customer's site.
public enum PolicyDirection: String, Sendable, Hashable {
    /// The edge opens it toward the plane (`toPlane` rules).
    case toPlane
    /// The plane opens it toward a local target on the edge (`fromPlane` rules).
    case fromPlane
}

/// A service name, or a prefix when it ends with `*` (spec/POLICY.md §3).
public struct ServicePattern: Sendable, Hashable, CustomStringConvertible {
    public let description: String

    public init(_ text: String) throws(PolicyError) {
        guard !text.isEmpty else { throw PolicyError("an empty service name") }
        guard !text.dropLast().contains("*") else { throw PolicyError("service \"\(text)\": `*` may only end a name") }
        self.description = text
    }

    public func matches(_ service: String) -> Bool {
        guard self.description.hasSuffix("*") else { return service == self.description }
        return service.hasPrefix(self.description.dropLast())
    }
}

/// One allow rule (spec/POLICY.md §3). METADATA rules name the fields that may pass; rules for
/// the other classes carry opaque bytes and must say so (`opaque: true`).
public struct PolicyRule: Sendable {
    /// What metrics and the audit log call the rule.
    public let name: String
    public let service: ServicePattern
    public let classes: Set<PolicyClass>
    /// For METADATA rules: the filter every message passes through.
    public let fields: JSONFilter?
    /// The OPEN metadata keys that may pass (spec/POLICY.md §6).
    public let openMetadata: FieldMatcher

    public var isOpaque: Bool { self.fields == nil }

    public init(
        name: String, service: ServicePattern, classes: Set<PolicyClass>, opaque: Bool,
        fields: [FieldPattern]?, openMetadata: [FieldPattern] = [], maxMessageBytes: Int = 1 << 20
    ) throws(PolicyError) {
        guard !classes.isEmpty else { throw PolicyError("\(name): no class") }
        if classes.contains(.metadata) {
            guard classes.count == 1 else {
                throw PolicyError("\(name): METADATA is filtered and the other classes are not; give them separate rules")
            }
            guard !opaque else { throw PolicyError("\(name): METADATA streams are always filtered; list `fields` (`**` passes everything)") }
            guard let fields else { throw PolicyError("\(name): a METADATA rule needs `fields`") }
            self.fields = JSONFilter(allowing: fields, maxBytes: maxMessageBytes)
        } else {
            guard opaque else {
                let names = classes.map(\.rawValue).sorted().joined(separator: ", ")
                throw PolicyError("\(name): \(names) streams carry bytes the policy cannot inspect; say `opaque: true` to allow them")
            }
            guard fields == nil else { throw PolicyError("\(name): `fields` applies to METADATA rules only") }
            self.fields = nil
        }
        self.name = name
        self.service = service
        self.classes = classes
        self.openMetadata = FieldMatcher(openMetadata)
    }

    /// Whether an OPEN metadata entry with this key may pass: a pattern must match the key whole
    /// (the value is opaque octets, so there is nothing below it to keep).
    public func allowsOpenMetadata(key: String) -> Bool {
        guard !key.utf8.contains(UInt8(ascii: ".")) else { return false }
        var states: [UInt32] = []
        switch self.openMetadata.start(&states) {
        case .all: return true
        case .none: return false
        case .partial:
            var name = key
            return name.withUTF8 { self.openMetadata.key($0, from: 0..<states.count, &states) } == .all
        }
    }
}

/// The decision on a stream (spec/POLICY.md §3).
public enum StreamDecision: Sendable {
    case allowed(PolicyRule)
    /// `rule` names the rule that decided (`default-deny` when none matched the service).
    case refused(rule: String, reason: String)
}

/// A default-deny policy (spec/POLICY.md): what may leave the customer's site and what the plane
/// may reach. It is a value; the file that makes it is the customer's and nothing the peer sends
/// changes it.
public struct Policy: Sendable {
    public static let formatVersion = 1
    public static let defaultDeny = "default-deny"

    public let toPlane: [PolicyRule]
    public let fromPlane: [PolicyRule]
    public let maxMessageBytes: Int

    public init(toPlane: [PolicyRule], fromPlane: [PolicyRule], maxMessageBytes: Int = 1 << 20) {
        self.toPlane = toPlane
        self.fromPlane = fromPlane
        self.maxMessageBytes = maxMessageBytes
    }

    /// Allows nothing.
    public static let denyAll = Policy(toPlane: [], fromPlane: [])

    /// The first rule that allows `service` with `streamClass`; otherwise why not.
    public func decide(_ direction: PolicyDirection, service: String, class streamClass: PolicyClass) -> StreamDecision {
        let rules = direction == .toPlane ? self.toPlane : self.fromPlane
        var named: PolicyRule?
        for rule in rules where rule.service.matches(service) {
            if rule.classes.contains(streamClass) { return .allowed(rule) }
            named = named ?? rule
        }
        if let named { return .refused(rule: named.name, reason: "class-not-allowed") }
        return .refused(rule: Self.defaultDeny, reason: "no-rule")
    }
}
