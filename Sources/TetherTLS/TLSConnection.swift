import COpenSSL
import NIOCore
import TetherWire

/// What the handshake established about the peer.
public struct TLSPeer: Hashable, Sendable {
    /// The client's verified identity (spec §2.2); nil on the client side, which verified the
    /// server's name instead.
    public var identity: TetherIdentity?
    public var applicationProtocol: String?
    public var version: String
    public var cipher: String
    /// SHA-256 of the peer certificate's DER encoding, hex: which certificate was presented; nil
    /// when a public server asked for none.
    public var certificateSHA256: String?
    /// When the peer certificate expires, in seconds since 1970 (UTC); nil when unreadable.
    public var certificateNotAfter: Int64?
}

/// One TLS connection's OpenSSL state over a ``ByteBufferBIO``: handshake, read, write, shutdown.
/// No NIO channel inside; ``TLSHandler`` drives it.
final class TLSConnection {
    let ssl: OpaquePointer
    let bio: ByteBufferBIO
    private let context: TLSContext

    enum Progress {
        case pending
        case done(TLSPeer)
        case failed(TLSError)
    }

    enum ReadOutcome {
        /// Nothing more until more ciphertext arrives.
        case wantMore
        /// The peer sent close_notify.
        case closed
        case failed(TLSError)
    }

    /// `serverName` (a client's) overrides the configuration's: the name or IP this connection verifies.
    init(context: TLSContext, allocator: ByteBufferAllocator, serverName: String? = nil) throws(TLSError) {
        guard let ssl = SSL_new(context.context) else {
            throw TLSError(.configuration, "SSL_new failed: \(OpenSSLErrors.drain())")
        }
        self.ssl = ssl
        self.context = context
        self.bio = ByteBufferBIO(allocator: allocator)
        SSL_set_bio(ssl, self.bio.bio, self.bio.bio)
        switch context.configuration.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            let name = serverName ?? context.configuration.serverName ?? ""
            // An IP address is verified as one; anything else is a DNS name, also sent as SNI.
            if X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1 {
                ERR_clear_error()
                // Every stored property is set: if this throws, deinit frees the SSL (and the BIO).
                guard SSL_set1_host(ssl, name) == 1, tether_SSL_set_tlsext_host_name(ssl, name) == 1 else {
                    throw TLSError(.configuration, "cannot verify against the server name \"\(name)\": \(OpenSSLErrors.drain())")
                }
            }
        }
    }

    deinit {
        SSL_free(self.ssl)  // frees the BIO too
    }

    func feed(_ ciphertext: ByteBuffer) {
        self.bio.append(ciphertext)
    }

    func takeCiphertext() -> ByteBuffer? {
        self.bio.takeOutbound()
    }

    /// Whether `plaintext` octets (one record at most) encrypt into the batch being gathered
    /// without growing it.
    func hasRoom(plaintext: Int) -> Bool { self.bio.hasRoom(plaintext: plaintext) }

    /// Sizes an empty batch for `plaintext` octets about to be written.
    func reserve(plaintext: Int) { self.bio.reserve(plaintext: plaintext) }

    /// Advances the handshake with what has arrived.
    func handshake() -> Progress {
        ERR_clear_error()
        let result = SSL_do_handshake(self.ssl)
        if result == 1 { return self.finishHandshake() }
        switch SSL_get_error(self.ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .pending
        default:
            return .failed(self.classifyFailure())
        }
    }

    /// Checks what OpenSSL cannot: the negotiated protocol and, on the server, the identity.
    private func finishHandshake() -> Progress {
        var selected: UnsafePointer<UInt8>? = nil
        var length: UInt32 = 0
        SSL_get0_alpn_selected(self.ssl, &selected, &length)
        let protocolName = selected.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(length)), as: UTF8.self) }
        let configuration = self.context.configuration
        let agreed = protocolName.map { configuration.applicationProtocols.contains($0) } ?? !configuration.requireALPN
        guard agreed else {
            return .failed(
                TLSError(.wrongALPN, "the peer agreed on \(protocolName ?? "no application protocol"), not \(configuration.applicationProtocols)"))
        }
        var peer = TLSPeer(
            identity: nil, applicationProtocol: protocolName, version: String(cString: SSL_get_version(self.ssl)),
            cipher: SSL_get_current_cipher(self.ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "?",
            certificateSHA256: nil, certificateNotAfter: nil)
        // A public server asked for no certificate: its clients authenticate above TLS.
        if configuration.role == .server && configuration.clientCertificate == .none { return .done(peer) }
        guard let certificate = SSL_get1_peer_certificate(self.ssl) else {
            return .failed(TLSError(.noClientCertificate, "the peer presented no certificate"))
        }
        defer { X509_free(certificate) }
        if configuration.role == .server {
            switch CertificateInspector.identity(of: certificate) {
            case .success(let value): peer.identity = value
            case .failure(let error): return .failed(error)
            }
        }
        peer.certificateSHA256 = CertificateInspector.sha256(of: certificate)
        peer.certificateNotAfter = CertificateInspector.notAfter(of: certificate)
        return .done(peer)
    }

    /// Decrypts records into `buffer` while it has room for a whole one (so it never grows), until
    /// no complete record is left.
    func read(into buffer: inout ByteBuffer) -> ReadOutcome {
        while buffer.writableBytes >= TLSHandler.recordSize {
            var result: Int32 = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: TLSHandler.recordSize) { space in
                ERR_clear_error()
                result = SSL_read(self.ssl, space.baseAddress, Int32(min(space.count, Int(Int32.max))))
                return result > 0 ? Int(result) : 0
            }
            if result > 0 {
                // One record at most per call; OpenSSL copies it out of its read buffer.
                TLSStatistics.Counters.recordsRead.wrappingAdd(1, ordering: .relaxed)
                TLSStatistics.Counters.plaintextOctetsRead.wrappingAdd(Int(result), ordering: .relaxed)
                TLSStatistics.Counters.octetsCopied.wrappingAdd(Int(result), ordering: .relaxed)
                continue
            }
            switch SSL_get_error(self.ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return .wantMore
            case SSL_ERROR_ZERO_RETURN:
                return .closed
            default:
                let (_, text) = OpenSSLErrors.drainReasons()
                return .failed(TLSError(.badRecord, text))
            }
        }
        return .wantMore
    }

    /// Encrypts all of `plaintext` into records (at most 16 KiB each); callers pass at most one
    /// record's worth when they want each record's ciphertext to fit the current batch.
    func write(_ plaintext: ByteBuffer) -> TLSError? {
        guard plaintext.readableBytes > 0 else { return nil }
        return plaintext.withUnsafeReadableBytes { bytes -> TLSError? in
            ERR_clear_error()
            let result = SSL_write(self.ssl, bytes.baseAddress, Int32(bytes.count))
            guard result == Int32(bytes.count) else {
                return TLSError(.badRecord, "SSL_write failed: \(OpenSSLErrors.drain())")
            }
            let records = (bytes.count + TLSHandler.recordSize - 1) / TLSHandler.recordSize
            TLSStatistics.Counters.recordsWritten.wrappingAdd(records, ordering: .relaxed)
            TLSStatistics.Counters.plaintextOctetsWritten.wrappingAdd(bytes.count, ordering: .relaxed)
            // OpenSSL 3.0 copies the plaintext into its write buffer and encrypts it there.
            TLSStatistics.Counters.octetsCopied.wrappingAdd(bytes.count, ordering: .relaxed)
            return nil
        }
    }

    /// Sends close_notify (spec §10.2 step 4).
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(self.ssl)
        ERR_clear_error()
    }

    /// Turns a failed handshake into an error that says what failed.
    private func classifyFailure() -> TLSError {
        let (reasons, text) = OpenSSLErrors.drainReasons()
        let verify = Int32(SSL_get_verify_result(self.ssl))
        if verify != X509_V_OK, let error = Self.verifyError(verify) { return error }
        for reason in reasons {
            if reason > SSL_AD_REASON_OFFSET {
                return Self.alertError(reason - Int32(SSL_AD_REASON_OFFSET), text)
            }
            switch reason {
            case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
                return TLSError(.noClientCertificate, "the client presented no certificate")
            case SSL_R_NO_APPLICATION_PROTOCOL:
                return TLSError(.wrongALPN, "the peer offered no protocol we speak (we speak tether/1)")
            case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE, SSL_R_WRONG_VERSION_NUMBER:
                return TLSError(.protocolVersion, "no common TLS version: \(text)")
            default:
                continue
            }
        }
        return TLSError(.handshakeFailed, text)
    }

    private static func verifyError(_ code: Int32) -> TLSError? {
        let reason = String(cString: X509_verify_cert_error_string(Int(code)))
        switch code {
        case X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_NOT_YET_VALID:
            return TLSError(.certificateExpired, "the peer's certificate: \(reason)")
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
            X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
            X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_SIGNATURE_FAILURE:
            return TLSError(.unknownCA, "the peer's certificate is not from a trusted CA: \(reason)")
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
            return TLSError(.nameMismatch, "the server's certificate does not match the name dialed: \(reason)")
        case X509_V_ERR_APPLICATION_VERIFICATION:
            return TLSError(.invalidIdentity, "the client's certificate has no single tether://<tenant>/<agent-id> URI SAN")
        default:
            return nil
        }
    }

    private static func alertError(_ alert: Int32, _ text: String) -> TLSError {
        switch alert {
        case SSL_AD_CERTIFICATE_EXPIRED:
            return TLSError(.certificateExpired, "the peer says our certificate is expired")
        case SSL_AD_UNKNOWN_CA:
            return TLSError(.unknownCA, "the peer does not trust our certificate's CA")
        case SSL_AD_CERTIFICATE_REQUIRED:
            return TLSError(.noClientCertificate, "the server requires a client certificate")
        case SSL_AD_NO_APPLICATION_PROTOCOL:
            return TLSError(.wrongALPN, "the peer does not speak tether/1")
        case SSL_AD_PROTOCOL_VERSION:
            return TLSError(.protocolVersion, "no common TLS version")
        default:
            return TLSError(.alertReceived, "the peer sent a fatal alert: \(text)")
        }
    }
}
