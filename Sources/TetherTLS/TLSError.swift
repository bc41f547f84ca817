/// The one error type of the TLS module: what failed, in words an operator can act on.
public struct TLSError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { self.name }

        /// A file could not be read, or a key does not match its certificate.
        public static let configuration = Code(name: "configuration")
        /// The handshake did not finish in time.
        public static let handshakeTimeout = Code(name: "handshakeTimeout")
        /// The peer's certificate is expired or not yet valid.
        public static let certificateExpired = Code(name: "certificateExpired")
        /// The peer's certificate does not chain to a trusted CA.
        public static let unknownCA = Code(name: "unknownCA")
        /// The server's certificate does not match the name or IP that was dialed.
        public static let nameMismatch = Code(name: "nameMismatch")
        /// The client presented no certificate.
        public static let noClientCertificate = Code(name: "noClientCertificate")
        /// The peer's certificate has no single valid `tether://` URI SAN (spec §2.2).
        public static let invalidIdentity = Code(name: "invalidIdentity")
        /// No common application protocol, or not `tether/1` (spec §2.1).
        public static let wrongALPN = Code(name: "wrongALPN")
        /// No common TLS version (TLS 1.2-only peers are refused by default).
        public static let protocolVersion = Code(name: "protocolVersion")
        /// The peer sent a fatal alert.
        public static let alertReceived = Code(name: "alertReceived")
        /// Any other handshake failure; the detail carries OpenSSL's reason.
        public static let handshakeFailed = Code(name: "handshakeFailed")
        /// A record could not be decrypted or parsed after the handshake.
        public static let badRecord = Code(name: "badRecord")
        /// The transport closed without close_notify.
        public static let truncated = Code(name: "truncated")
    }

    public let code: Code
    public let detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "TLS \(self.code): \(self.detail)" }
}
