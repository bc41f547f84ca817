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

    /// What a server asks of its clients.
    public enum ClientCertificate: Sendable, Hashable {
        /// A certificate from a trusted CA carrying exactly one Tether identity (spec §2.2): the
        /// hub's listener for edges.
        case tetherIdentity
        /// None is asked for: a public TLS endpoint whose clients authenticate above TLS (the hub's
        /// HTTP CONNECT front door, with bearer tokens). No trusted CA is needed.
        case none
    }

    /// A server for clients that are not Tether peers: no client certificate, ALPN `http/1.1` when
    /// the client offers ALPN at all, none when it does not (curl offers it to an HTTPS proxy; not
    /// every client does).
    public static func publicServer(certificateChainFile: String, privateKeyFile: String) -> TLSConfiguration {
        var configuration = TLSConfiguration(
            role: .server, certificateChainFile: certificateChainFile, privateKeyFile: privateKeyFile, trustedCAFiles: [])
        configuration.clientCertificate = .none
        configuration.applicationProtocols = ["http/1.1"]
        configuration.requireALPN = false
        return configuration
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
    /// Servers only: what a client must present.
    public var clientCertificate: ClientCertificate = .tetherIdentity
    /// Whether a client that offers no ALPN is refused (spec §2.1). A client that offers ALPN
    /// without any of ``applicationProtocols`` is refused either way (RFC 7301).
    public var requireALPN = true
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
