import NIOCore

/// How one end sets up TLS (spec §2.1). A plain `Sendable` value; ``TLSContext`` turns it into an
/// OpenSSL context.
public struct TLSConfiguration: Sendable, Hashable {
    public enum Role: Sendable, Hashable {
        /// Dials and verifies the server's name or IP (the edge).
        case client
        /// Accepts and requires a client certificate (the hub).
        case server
    }

    public enum Version: Sendable, Hashable {
        case tls12
        case tls13
    }

    public var role: Role
    /// PEM file with the certificate, then its intermediates.
    public var certificateChainFile: String
    /// PEM file with the private key.
    public var privateKeyFile: String
    /// PEM files with the CAs trusted to sign the peer's certificate; several at once for rollover.
    public var trustedCAFiles: [String]
    /// TLS 1.3 unless configured otherwise (spec §2.1).
    public var minimumVersion: Version = .tls13
    /// Offered (client) or required (server) application protocols (spec §2.1).
    public var applicationProtocols: [String] = [TLSConfiguration.tetherALPN]
    /// What the client dialed and verifies the server's certificate against: a DNS name or an IP
    /// address. Required for clients.
    public var serverName: String?
    /// Servers only: require a client certificate carrying a Tether identity (spec §2.2).
    public var requireClientIdentity: Bool = true
    /// The TLS 1.3 cipher suites offered (client) or accepted (server), in OpenSSL's
    /// colon-separated form, in order of preference. A list OpenSSL cannot use is refused when
    /// the context is made.
    public var cipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    /// A handshake not finished by then fails with ``TLSError/Code/handshakeTimeout``.
    public var handshakeTimeout: TimeAmount = .seconds(10)

    /// The ALPN name of protocol version 1 (spec §2.1).
    public static let tetherALPN = "tether/1"

    public init(
        role: Role, certificateChainFile: String, privateKeyFile: String, trustedCAFiles: [String],
        serverName: String? = nil
    ) {
        self.role = role
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.trustedCAFiles = trustedCAFiles
        self.serverName = serverName
    }

    /// The files whose contents define the context, for reloading (spec §2.1: files reload without restart).
    public var files: [String] { [self.certificateChainFile, self.privateKeyFile] + self.trustedCAFiles }
}
