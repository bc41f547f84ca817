/// A setting identifier (spec §3.3).
public struct SettingID: Hashable, Sendable, RawRepresentable {
    public var rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    public static let versionMin = SettingID(rawValue: 0x01)
    public static let versionMax = SettingID(rawValue: 0x02)
    public static let maxFramePayload = SettingID(rawValue: 0x03)
    public static let maxOpenSize = SettingID(rawValue: 0x04)
    public static let initialStreamCredit = SettingID(rawValue: 0x05)
    public static let initialConnectionCredit = SettingID(rawValue: 0x06)
    public static let initialStreamsCommand = SettingID(rawValue: 0x07)
    public static let initialStreamsMetadata = SettingID(rawValue: 0x08)
    public static let initialStreamsLogs = SettingID(rawValue: 0x09)
    public static let initialStreamsBulk = SettingID(rawValue: 0x0A)
    public static let compression = SettingID(rawValue: 0x0B)
    public static let keepaliveIntervalMilliseconds = SettingID(rawValue: 0x0C)
    public static let instanceID = SettingID(rawValue: 0x0D)
    public static let redialWindowMilliseconds = SettingID(rawValue: 0x0E)
    public static let openAcknowledgements = SettingID(rawValue: 0x0F)
    public static let implementationVersion = SettingID(rawValue: 0x10)

    /// The `INITIAL_STREAMS_<CLASS>` setting of a class.
    public static func initialStreams(_ streamClass: StreamClass) -> SettingID {
        SettingID(rawValue: 0x06 + UInt16(streamClass.rawValue))
    }

    /// The spec's name (`MAX_FRAME_PAYLOAD`), or nil for an unknown id.
    public var name: String? {
        switch self.rawValue {
        case 0x01: "VERSION_MIN"
        case 0x02: "VERSION_MAX"
        case 0x03: "MAX_FRAME_PAYLOAD"
        case 0x04: "MAX_OPEN_SIZE"
        case 0x05: "INITIAL_STREAM_CREDIT"
        case 0x06: "INITIAL_CONNECTION_CREDIT"
        case 0x07: "INITIAL_STREAMS_COMMAND"
        case 0x08: "INITIAL_STREAMS_METADATA"
        case 0x09: "INITIAL_STREAMS_LOGS"
        case 0x0A: "INITIAL_STREAMS_BULK"
        case 0x0B: "COMPRESSION"
        case 0x0C: "KEEPALIVE_INTERVAL_MS"
        case 0x0D: "INSTANCE_ID"
        case 0x0E: "REDIAL_WINDOW_MS"
        case 0x0F: "OPEN_ACK"
        case 0x10: "IMPLEMENTATION_VERSION"
        default: nil
        }
    }

    public init?(name: String) {
        guard let id = (1...0x10).lazy.map({ SettingID(rawValue: $0) }).first(where: { $0.name == name }) else {
            return nil
        }
        self = id
    }
}

/// One SETTINGS entry: a 16-bit id and a 32-bit value (spec §3.3).
public struct Setting: Hashable, Sendable {
    public var id: SettingID
    public var value: UInt32

    public init(_ id: SettingID, _ value: UInt32) {
        self.id = id
        self.value = value
    }
}

/// The settings one endpoint announces: what it is willing to receive and does (spec §3.3).
///
/// Defaults are the spec's defaults; ``init(validating:)`` applies the spec's ranges.
public struct Settings: Hashable, Sendable {
    public var versionMin: UInt32 = 1
    public var versionMax: UInt32 = 1
    public var maxFramePayload: UInt32 = Settings.minMaxFramePayload
    public var maxOpenSize: UInt32 = Settings.maxMaxOpenSize
    public var initialStreamCredit: UInt32 = 262_144
    public var initialConnectionCredit: UInt32 = 4_194_304
    public var initialStreams = PerClass<UInt32>(256)
    public var compression = CompressionSet([.deflate])
    public var keepaliveIntervalMilliseconds: UInt32 = 15_000
    public var instanceID: UInt32 = 0
    /// An acceptor's advice for its GOAWAY `NO_ERROR` (spec §10.2): dial a new connection after a
    /// random delay within this many milliseconds, before the old one closes; 0 = no advice.
    public var redialWindowMilliseconds: UInt32 = 0
    /// The sender acknowledges every stream it accepts with OPENED once it has reached what the
    /// stream names (spec §5.8), so its peer may wait for that.
    public var openAcknowledgements = false
    /// The sender's software release, for operators (spec §3.3): major·2¹⁶ + minor·2⁸ + patch;
    /// 0 = not said. Nothing in the protocol depends on it.
    public var implementationVersion: UInt32 = 0

    /// 16,384 − 9: header + payload fit one TLS record (spec §4.2).
    public static let minMaxFramePayload: UInt32 = 16_375
    /// The 24-bit length field's maximum.
    public static let maxMaxFramePayload: UInt32 = 16_777_215
    public static let minMaxOpenSize: UInt32 = 64
    /// OPEN is at most 4 KiB (spec §5.2).
    public static let maxMaxOpenSize: UInt32 = 4_096
    public static let maxCredit: UInt32 = 0x7FFF_FFFF
    public static let maxInitialStreams: UInt32 = 1 << 24
    public static let keepaliveRange: ClosedRange<UInt32> = 1_000...30_000
    public static let maxRedialWindowMilliseconds: UInt32 = 600_000

    public init() {}

    /// Reads and validates the entries of a SETTINGS frame (spec §3.3): a repeated id or a known
    /// setting out of range is `SETTINGS_ERROR`; unknown ids are ignored.
    public init(validating entries: [Setting]) throws(WireError) {
        self.init()
        var seen = Set<SettingID>()
        for entry in entries {
            guard seen.insert(entry.id).inserted else {
                throw WireError(.duplicateSetting, "setting 0x\(String(entry.id.rawValue, radix: 16)) appears twice")
            }
            try self.apply(entry)
        }
        guard self.versionMin <= self.versionMax else {
            throw WireError(.settingOutOfRange, "VERSION_MIN \(self.versionMin) > VERSION_MAX \(self.versionMax)")
        }
    }

    private mutating func apply(_ entry: Setting) throws(WireError) {
        let value = entry.value
        func check(_ range: ClosedRange<UInt32>) throws(WireError) {
            guard range.contains(value) else {
                throw WireError(.settingOutOfRange, "\(entry.id.name ?? "?") = \(value), allowed \(range)")
            }
        }
        switch entry.id {
        case .versionMin:
            try check(1...UInt32.max)
            self.versionMin = value
        case .versionMax:
            try check(1...UInt32.max)
            self.versionMax = value
        case .maxFramePayload:
            try check(Self.minMaxFramePayload...Self.maxMaxFramePayload)
            self.maxFramePayload = value
        case .maxOpenSize:
            try check(Self.minMaxOpenSize...Self.maxMaxOpenSize)
            self.maxOpenSize = value
        case .initialStreamCredit:
            try check(0...Self.maxCredit)
            self.initialStreamCredit = value
        case .initialConnectionCredit:
            try check(Self.minMaxFramePayload...Self.maxCredit)
            self.initialConnectionCredit = value
        case .initialStreamsCommand, .initialStreamsMetadata, .initialStreamsLogs, .initialStreamsBulk:
            try check(0...Self.maxInitialStreams)
            self.initialStreams[StreamClass(rawValue: UInt8(entry.id.rawValue - 0x06))!] = value
        case .compression:
            self.compression = CompressionSet(rawValue: value)
        case .keepaliveIntervalMilliseconds:
            guard value == 0 || Self.keepaliveRange.contains(value) else {
                throw WireError(.settingOutOfRange, "KEEPALIVE_INTERVAL_MS = \(value), allowed 0 or \(Self.keepaliveRange)")
            }
            self.keepaliveIntervalMilliseconds = value
        case .instanceID:
            self.instanceID = value
        case .redialWindowMilliseconds:
            try check(0...Self.maxRedialWindowMilliseconds)
            self.redialWindowMilliseconds = value
        case .openAcknowledgements:
            try check(0...1)
            self.openAcknowledgements = value == 1
        case .implementationVersion:
            try check(0...0xFF_FFFF)
            self.implementationVersion = value
        default:
            break  // unknown ids are ignored (spec §3.3)
        }
    }

    /// Every known setting, explicitly, in id order: what an endpoint sends in its preface.
    /// `REDIAL_WINDOW_MS` only when it is not 0 (an acceptor's advice; dialers never send it),
    /// `OPEN_ACK` only when it is 1, `IMPLEMENTATION_VERSION` only when it is not 0.
    public var entries: [Setting] {
        var entries = [
            Setting(.versionMin, self.versionMin),
            Setting(.versionMax, self.versionMax),
            Setting(.maxFramePayload, self.maxFramePayload),
            Setting(.maxOpenSize, self.maxOpenSize),
            Setting(.initialStreamCredit, self.initialStreamCredit),
            Setting(.initialConnectionCredit, self.initialConnectionCredit),
        ]
        for streamClass in StreamClass.allCases {
            entries.append(Setting(.initialStreams(streamClass), self.initialStreams[streamClass]))
        }
        entries += [
            Setting(.compression, self.compression.rawValue),
            Setting(.keepaliveIntervalMilliseconds, self.keepaliveIntervalMilliseconds),
            Setting(.instanceID, self.instanceID),
        ]
        if self.redialWindowMilliseconds != 0 {
            entries.append(Setting(.redialWindowMilliseconds, self.redialWindowMilliseconds))
        }
        if self.openAcknowledgements { entries.append(Setting(.openAcknowledgements, 1)) }
        if self.implementationVersion != 0 { entries.append(Setting(.implementationVersion, self.implementationVersion)) }
        return entries
    }

    /// The connection's version (spec §3.4), or nil when the ranges do not meet.
    public static func negotiateVersion(_ a: Settings, _ b: Settings) -> UInt32? {
        let version = min(a.versionMax, b.versionMax)
        return version >= max(a.versionMin, b.versionMin) ? version : nil
    }
}
