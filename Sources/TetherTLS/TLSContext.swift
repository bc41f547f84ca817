import COpenSSL
import NIOCore
import TetherWire

/// An OpenSSL `SSL_CTX` built from a ``TLSConfiguration`` (spec §2.1): certificate and key,
/// trusted CAs, TLS 1.3 minimum, ALPN, mutual authentication, `SSL_MODE_RELEASE_BUFFERS`.
///
/// `@unchecked Sendable`: the context is immutable once built, and OpenSSL allows creating
/// connections from one `SSL_CTX` on many threads.
public final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    public let configuration: TLSConfiguration
    /// The ALPN list in wire format behind its 2-octet length, kept alive for OpenSSL's selection
    /// callback, which gets only this pointer.
    private let alpnWire: UnsafeMutableBufferPointer<UInt8>

    public init(configuration: TLSConfiguration) throws(TLSError) {
        let method = configuration.role == .client ? TLS_client_method() : TLS_server_method()
        guard let context = SSL_CTX_new(method) else {
            throw TLSError(.configuration, "SSL_CTX_new failed: \(OpenSSLErrors.drain())")
        }
        self.context = context
        self.configuration = configuration
        var wire: [UInt8] = []
        for name in configuration.applicationProtocols where !name.isEmpty && name.utf8.count < 256 {
            wire.append(UInt8(name.utf8.count))
            wire += name.utf8
        }
        let alpnCount = wire.count
        self.alpnWire = .allocate(capacity: 2 + alpnCount)
        _ = self.alpnWire.initialize(from: [UInt8(alpnCount >> 8), UInt8(alpnCount & 0xFF)] + wire)
        // Every property is set: if this throws, deinit frees the context and the list.
        try self.configure(alpnCount: alpnCount)
    }

    /// When this context's own certificate expires, in seconds since 1970 (UTC): the relays'
    /// `tether_certificate_expiry_seconds`.
    public var certificateNotAfter: Int64? {
        SSL_CTX_get0_certificate(self.context).flatMap(CertificateInspector.notAfter(of:))
    }

    /// The identity (spec §2.2) of this context's own certificate, when it carries one.
    public var identity: TetherIdentity? {
        SSL_CTX_get0_certificate(self.context).flatMap { try? CertificateInspector.identity(of: $0).get() }
    }

    deinit {
        SSL_CTX_free(self.context)
        self.alpnWire.deallocate()
    }

    private func configure(alpnCount: Int) throws(TLSError) {
        let configuration = self.configuration
        let version = configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard tether_SSL_CTX_set_min_proto_version(self.context, version) == 1 else {
            throw TLSError(.configuration, "cannot set the minimum TLS version: \(OpenSSLErrors.drain())")
        }
        _ = SSL_CTX_set_options(
            self.context,
            tether_SSL_OP_NO_COMPRESSION() | tether_SSL_OP_NO_RENEGOTIATION() | tether_SSL_OP_NO_TICKET()
                | tether_SSL_OP_CIPHER_SERVER_PREFERENCE())
        // Idle connections must be cheap: no record buffers while nothing is in flight.
        _ = tether_SSL_CTX_set_mode(self.context, Int(SSL_MODE_RELEASE_BUFFERS))
        tether_SSL_CTX_set_read_ahead(self.context, 1)
        guard SSL_CTX_set_ciphersuites(self.context, configuration.cipherSuites) == 1 else {
            throw TLSError(
                .configuration, "no usable TLS 1.3 cipher suite in \"\(configuration.cipherSuites)\": \(OpenSSLErrors.drain())")
        }

        guard SSL_CTX_use_certificate_chain_file(self.context, configuration.certificateChainFile) == 1 else {
            throw TLSError(
                .configuration,
                "cannot load the certificate chain \(configuration.certificateChainFile): \(OpenSSLErrors.drain())")
        }
        guard SSL_CTX_use_PrivateKey_file(self.context, configuration.privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError(
                .configuration, "cannot load the private key \(configuration.privateKeyFile): \(OpenSSLErrors.drain())")
        }
        guard SSL_CTX_check_private_key(self.context) == 1 else {
            throw TLSError(.configuration, "the private key does not match the certificate: \(OpenSSLErrors.drain())")
        }
        let verifiesPeer = configuration.role == .client || configuration.clientCertificate == .tetherIdentity
        guard !verifiesPeer || !configuration.trustedCAFiles.isEmpty else {
            throw TLSError(.configuration, "no trusted CA file: the peer could not be verified")
        }
        for file in configuration.trustedCAFiles {
            guard SSL_CTX_load_verify_locations(self.context, file, nil) == 1 else {
                throw TLSError(.configuration, "cannot load the trusted CA file \(file): \(OpenSSLErrors.drain())")
            }
        }

        switch configuration.role {
        case .client:
            guard configuration.serverName != nil else {
                throw TLSError(.configuration, "a client needs the server's name or IP to verify it")
            }
            SSL_CTX_set_verify(self.context, SSL_VERIFY_PEER, nil)
            guard SSL_CTX_set_alpn_protos(self.context, self.alpnWire.baseAddress! + 2, UInt32(alpnCount)) == 0 else {
                throw TLSError(.configuration, "cannot set ALPN: \(OpenSSLErrors.drain())")
            }
        case .server:
            switch configuration.clientCertificate {
            case .tetherIdentity:
                SSL_CTX_set_verify(self.context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, Self.verifyIdentity)
            case .none:
                SSL_CTX_set_verify(self.context, SSL_VERIFY_NONE, nil)
            }
            SSL_CTX_set_alpn_select_cb(self.context, Self.selectALPN, UnsafeMutableRawPointer(self.alpnWire.baseAddress))
            // OpenSSL asks the selection callback only when the client offers ALPN at all.
            if configuration.requireALPN { SSL_CTX_set_client_hello_cb(self.context, Self.requireALPN, nil) }
        }
    }

    /// A new connection's OpenSSL state.
    func makeConnection(allocator: ByteBufferAllocator, serverName: String? = nil) throws(TLSError) -> TLSConnection {
        try TLSConnection(context: self, allocator: allocator, serverName: serverName)
    }

    /// The server's ALPN selection: `tether/1` or a fatal `no_application_protocol` alert (spec §2.1).
    private static let selectALPN:
        @convention(c) (
            OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
            UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
        ) -> Int32 = { _, out, outLength, offered, offeredLength, argument in
            guard let argument else { return SSL_TLSEXT_ERR_ALERT_FATAL }
            let list = argument.assumingMemoryBound(to: UInt8.self)
            let length = UInt32(list[0]) << 8 | UInt32(list[1])
            let ours = list + 2
            var selected: UnsafeMutablePointer<UInt8>? = nil
            let result = SSL_select_next_proto(&selected, outLength, ours, length, offered, offeredLength)
            guard result == OPENSSL_NPN_NEGOTIATED, let selected else { return SSL_TLSEXT_ERR_ALERT_FATAL }
            out?.pointee = UnsafePointer(selected)
            return SSL_TLSEXT_ERR_OK
        }

    /// Refuses a ClientHello that offers no ALPN with a fatal `no_application_protocol` alert
    /// (spec §2.1), during the handshake: without it the handshake would complete and the
    /// connection close with no alert, leaving the client to guess why.
    private static let requireALPN: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?) -> Int32 = {
        ssl, alert, _ in
        var extensionData: UnsafePointer<UInt8>? = nil
        var length = 0
        guard SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_application_layer_protocol_negotiation), &extensionData, &length) == 1
        else {
            alert?.pointee = SSL_AD_NO_APPLICATION_PROTOCOL
            tether_ERR_raise_SSL(SSL_R_NO_APPLICATION_PROTOCOL)  // so the failure names the cause
            return SSL_CLIENT_HELLO_ERROR
        }
        return SSL_CLIENT_HELLO_SUCCESS
    }

    /// The server's check of the client certificate's identity (spec §2.2): exactly one URI SAN, of
    /// the form `tether://<tenant>/<agent-id>`. The chain itself was verified by OpenSSL.
    private static let verifyIdentity: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverified, store in
        guard preverified == 1, let store else { return preverified }
        guard X509_STORE_CTX_get_error_depth(store) == 0 else { return 1 }
        guard let certificate = X509_STORE_CTX_get_current_cert(store),
            case .success = CertificateInspector.identity(of: certificate)
        else {
            X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
            return 0
        }
        return 1
    }
}

/// Reads OpenSSL's thread-local error queue.
enum OpenSSLErrors {
    /// Every queued error as text, oldest first; the queue is empty afterwards.
    static func drain() -> String {
        let (_, text) = self.drainReasons()
        return text.isEmpty ? "no OpenSSL error" : text
    }

    /// The reason codes of every queued error, oldest first; the queue is empty afterwards.
    static func drainReasons() -> (reasons: [Int32], text: String) {
        var reasons: [Int32] = []
        var messages: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            reasons.append(Int32(code & 0x7F_FFFF))
            messages.append(self.describe(code))
        }
        return (reasons, messages.joined(separator: "; "))
    }

    private static func describe(_ code: UInt) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer in
            ERR_error_string_n(code, buffer.baseAddress, buffer.count)
            return String(cString: buffer.baseAddress!)
        }
    }
}
