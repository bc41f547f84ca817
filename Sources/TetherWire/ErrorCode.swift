/// A 32-bit error code carried by RESET and GOAWAY (spec §11).
///
/// Unknown codes are kept as they are; a receiver treats them as ``internalError``.
public struct ErrorCode: Hashable, Sendable, RawRepresentable {
    public var rawValue: UInt32

    @inlinable
    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Graceful end; on RESET: the reader no longer wants data.
    public static let noError = ErrorCode(rawValue: 0x00)
    /// A rule of the protocol was broken.
    public static let protocolError = ErrorCode(rawValue: 0x01)
    /// The sender hit an unexpected failure.
    public static let internalError = ErrorCode(rawValue: 0x02)
    /// Data beyond credit, a limit going backwards, or a wrong final size (spec §7).
    public static let flowControlError = ErrorCode(rawValue: 0x03)
    /// A stream was opened beyond its class's stream-count credit (spec §7.3).
    public static let streamLimitError = ErrorCode(rawValue: 0x04)
    /// A frame longer than allowed or with a wrong payload size (spec §4.2, §5).
    public static let frameSizeError = ErrorCode(rawValue: 0x05)
    /// DATA on a stream the peer had already closed (spec §6.3).
    public static let streamClosed = ErrorCode(rawValue: 0x06)
    /// A setting out of range or repeated (spec §3.3).
    public static let settingsError = ErrorCode(rawValue: 0x07)
    /// No common protocol version (spec §3.4).
    public static let versionMismatch = ErrorCode(rawValue: 0x08)
    /// The peer exceeded an abuse limit (spec §12).
    public static let enhanceYourCalm = ErrorCode(rawValue: 0x09)
    /// Nothing arrived within the keepalive timeout (spec §10.1).
    public static let keepaliveTimeout = ErrorCode(rawValue: 0x0A)
    /// A newer connection with the same identity replaced this one (spec §2.2).
    public static let replaced = ErrorCode(rawValue: 0x0B)
    /// The stream was not processed; it is safe to retry (spec §6.2, §10.2).
    public static let refusedStream = ErrorCode(rawValue: 0x0C)
    /// The sender no longer needs the stream.
    public static let cancel = ErrorCode(rawValue: 0x0D)
    /// No such service or target on the receiver.
    public static let unknownService = ErrorCode(rawValue: 0x0E)
    /// The allowlist policy forbids the stream.
    public static let policyDenied = ErrorCode(rawValue: 0x0F)
    /// Bad compressed data, an unsupported algorithm, or a decompression limit (spec §9).
    public static let compressionError = ErrorCode(rawValue: 0x10)
    /// The relay could not reach the backend.
    public static let connectError = ErrorCode(rawValue: 0x11)
    /// An open, idle or half-close timeout (spec §12).
    public static let timeout = ErrorCode(rawValue: 0x12)
    /// The acceptor refused the connection before any stream: an admission check (a revoked
    /// identity, a connection cap, a handshake rate); the GOAWAY's debug text says which.
    public static let refused = ErrorCode(rawValue: 0x13)

    /// Every code spec §11 defines, in order.
    public static let allDefined: [ErrorCode] = [
        .noError, .protocolError, .internalError, .flowControlError, .streamLimitError, .frameSizeError,
        .streamClosed, .settingsError, .versionMismatch, .enhanceYourCalm, .keepaliveTimeout, .replaced,
        .refusedStream, .cancel, .unknownService, .policyDenied, .compressionError, .connectError, .timeout,
        .refused,
    ]

    /// The spec's name for the code (`PROTOCOL_ERROR`), or `0x…` for an unknown code.
    public var name: String {
        switch self.rawValue {
        case 0x00: "NO_ERROR"
        case 0x01: "PROTOCOL_ERROR"
        case 0x02: "INTERNAL_ERROR"
        case 0x03: "FLOW_CONTROL_ERROR"
        case 0x04: "STREAM_LIMIT_ERROR"
        case 0x05: "FRAME_SIZE_ERROR"
        case 0x06: "STREAM_CLOSED"
        case 0x07: "SETTINGS_ERROR"
        case 0x08: "VERSION_MISMATCH"
        case 0x09: "ENHANCE_YOUR_CALM"
        case 0x0A: "KEEPALIVE_TIMEOUT"
        case 0x0B: "REPLACED"
        case 0x0C: "REFUSED_STREAM"
        case 0x0D: "CANCEL"
        case 0x0E: "UNKNOWN_SERVICE"
        case 0x0F: "POLICY_DENIED"
        case 0x10: "COMPRESSION_ERROR"
        case 0x11: "CONNECT_ERROR"
        case 0x12: "TIMEOUT"
        case 0x13: "REFUSED"
        default: "0x" + String(self.rawValue, radix: 16)
        }
    }

    /// Looks a code up by its spec name (`"PROTOCOL_ERROR"`).
    public init?(name: String) {
        guard let code = Self.allDefined.first(where: { $0.name == name }) else { return nil }
        self = code
    }
}

extension ErrorCode: CustomStringConvertible {
    public var description: String { self.name }
}
