#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSL
import TetherWire

/// A small certificate authority on OpenSSL's API (no shelling out): throw-away CAs, hub
/// certificates and edge certificates carrying the identity SAN (spec §2.2), for `tether certs`,
/// the demo and the tests. Keys are ECDSA P-256; signatures SHA-256.
///
/// `@unchecked Sendable`: the key and certificate are never modified after creation.
public final class CertificateAuthority: @unchecked Sendable {
    private let key: OpaquePointer
    private let certificate: OpaquePointer

    /// A certificate and its private key, PEM-encoded.
    public struct Issued: Sendable, Hashable {
        public var certificatePEM: String
        public var privateKeyPEM: String

        /// SHA-256 of the certificate's DER encoding, hex (as ``TLSPeer/certificateSHA256``).
        public var certificateSHA256: String {
            get throws(TLSError) {
                // The BIO reads the string in place: it must live while the BIO does.
                let digest = self.certificatePEM.withCString { pem -> String? in
                    let bio = BIO_new_mem_buf(pem, -1)!
                    defer { BIO_free(bio) }
                    guard let certificate = PEM_read_bio_X509(bio, nil, nil, nil) else { return nil }
                    defer { X509_free(certificate) }
                    return CertificateInspector.sha256(of: certificate)
                }
                guard let digest else { throw TLSError(.configuration, "not a PEM certificate") }
                return digest
            }
        }

        /// Writes both files; the key file is readable by its owner only.
        public func write(certificateTo certificatePath: String, keyTo keyPath: String) throws(TLSError) {
            try PEMFile.write(self.certificatePEM, to: certificatePath, mode: 0o644)
            try PEMFile.write(self.privateKeyPEM, to: keyPath, mode: 0o600)
        }
    }

    /// What to put in a certificate.
    public struct Request: Sendable {
        public var commonName: String
        public var dnsNames: [String] = []
        public var ipAddresses: [String] = []
        /// URI SANs, such as `tether://acme/node-1` (spec §2.2).
        public var uris: [String] = []
        /// Seconds from now; negative for a certificate that is already valid (or expired).
        public var notBefore: Int = -3_600
        public var notAfter: Int = 397 * 86_400
        public var serverAuth = true
        public var clientAuth = true

        public init(commonName: String) {
            self.commonName = commonName
        }

        /// An edge's client certificate with its identity SAN.
        public static func edge(_ identity: TetherIdentity) -> Request {
            var request = Request(commonName: identity.agentID)
            request.uris = [identity.uri]
            request.serverAuth = false
            return request
        }

        /// A hub's server certificate for the names and addresses edges dial.
        public static func hub(dnsNames: [String], ipAddresses: [String]) -> Request {
            var request = Request(commonName: dnsNames.first ?? ipAddresses.first ?? "tether-hub")
            request.dnsNames = dnsNames
            request.ipAddresses = ipAddresses
            return request
        }
    }

    /// A new self-signed CA.
    public init(commonName: String, validDays: Int = 3_650) throws(TLSError) {
        let key = try Self.generateKey()
        var request = Request(commonName: commonName)
        request.notAfter = validDays * 86_400
        do {
            self.certificate = try Self.build(request, publicKey: key, isCA: true, issuer: nil, signingKey: key)
        } catch {
            EVP_PKEY_free(key)
            throw error
        }
        self.key = key
    }

    /// An existing CA from its PEM files (to issue more certificates later).
    public init(certificateFile: String, keyFile: String) throws(TLSError) {
        let certificate = try PEMFile.readCertificate(certificateFile)
        do {
            self.key = try PEMFile.readPrivateKey(keyFile)
        } catch {
            X509_free(certificate)
            throw error
        }
        self.certificate = certificate
    }

    deinit {
        X509_free(self.certificate)
        EVP_PKEY_free(self.key)
    }

    /// The CA's own certificate and key.
    public var issued: Issued {
        Issued(certificatePEM: PEMFile.encode(certificate: self.certificate), privateKeyPEM: PEMFile.encode(key: self.key))
    }

    /// Issues a certificate with a fresh key.
    public func issue(_ request: Request) throws(TLSError) -> Issued {
        let key = try Self.generateKey()
        defer { EVP_PKEY_free(key) }
        let certificate = try Self.build(
            request, publicKey: key, isCA: false, issuer: self.certificate, signingKey: self.key)
        defer { X509_free(certificate) }
        return Issued(certificatePEM: PEMFile.encode(certificate: certificate), privateKeyPEM: PEMFile.encode(key: key))
    }

    private static func generateKey() throws(TLSError) -> OpaquePointer {
        guard let key = tether_EVP_EC_gen("P-256") else {
            throw TLSError(.configuration, "cannot generate a P-256 key: \(OpenSSLErrors.drain())")
        }
        return key
    }

    private static func build(
        _ request: Request, publicKey: OpaquePointer, isCA: Bool, issuer: OpaquePointer?, signingKey: OpaquePointer
    ) throws(TLSError) -> OpaquePointer {
        guard let certificate = X509_new() else { throw TLSError(.configuration, "X509_new failed") }
        var serial: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &serial) { RAND_bytes($0.baseAddress, Int32($0.count)) }
        serial &= 0x7FFF_FFFF_FFFF_FFFF
        let subject = X509_get_subject_name(certificate)
        guard X509_set_version(certificate, 2) == 1,
            ASN1_INTEGER_set_uint64(X509_get_serialNumber(certificate), serial | 1) == 1,
            X509_gmtime_adj(X509_getm_notBefore(certificate), request.notBefore) != nil,
            X509_gmtime_adj(X509_getm_notAfter(certificate), request.notAfter) != nil,
            X509_set_pubkey(certificate, publicKey) == 1,
            X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, request.commonName, -1, -1, 0) == 1,
            X509_set_issuer_name(certificate, issuer.map { X509_get_subject_name($0) } ?? subject) == 1
        else {
            X509_free(certificate)
            throw TLSError(.configuration, "cannot fill the certificate: \(OpenSSLErrors.drain())")
        }

        var extensions: [(Int32, String)] = [(NID_subject_key_identifier, "hash")]
        if isCA {
            extensions += [(NID_basic_constraints, "critical,CA:TRUE"), (NID_key_usage, "critical,keyCertSign,cRLSign")]
        } else {
            extensions += [
                (NID_basic_constraints, "critical,CA:FALSE"), (NID_key_usage, "critical,digitalSignature"),
                (NID_authority_key_identifier, "keyid:always"),
            ]
            let usages = (request.serverAuth ? ["serverAuth"] : []) + (request.clientAuth ? ["clientAuth"] : [])
            if !usages.isEmpty { extensions.append((NID_ext_key_usage, usages.joined(separator: ","))) }
            let names = request.dnsNames.map { "DNS:\($0)" } + request.ipAddresses.map { "IP:\($0)" }
                + request.uris.map { "URI:\($0)" }
            if !names.isEmpty { extensions.append((NID_subject_alt_name, names.joined(separator: ","))) }
        }
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuer ?? certificate, certificate, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
                X509_free(certificate)
                throw TLSError(.configuration, "cannot add extension \(value): \(OpenSSLErrors.drain())")
            }
            X509_add_ext(certificate, ext, -1)
            X509_EXTENSION_free(ext)
        }
        guard X509_sign(certificate, signingKey, EVP_sha256()) > 0 else {
            X509_free(certificate)
            throw TLSError(.configuration, "cannot sign the certificate: \(OpenSSLErrors.drain())")
        }
        return certificate
    }
}

/// PEM in and out through OpenSSL's BIOs.
enum PEMFile {
    static func encode(certificate: OpaquePointer) -> String {
        self.withMemoryBIO { PEM_write_bio_X509($0, certificate) }
    }

    static func encode(key: OpaquePointer) -> String {
        self.withMemoryBIO { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
    }

    private static func withMemoryBIO(_ body: (OpaquePointer) -> Int32) -> String {
        let bio = BIO_new(BIO_s_mem())!
        defer { BIO_free(bio) }
        _ = body(bio)
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = tether_BIO_get_mem_data(bio, &data)
        guard let data, length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }

    static func readCertificate(_ path: String) throws(TLSError) -> OpaquePointer {
        guard let bio = BIO_new_file(path, "r") else { throw TLSError(.configuration, "cannot open \(path)") }
        defer { BIO_free(bio) }
        guard let certificate = PEM_read_bio_X509(bio, nil, nil, nil) else {
            throw TLSError(.configuration, "\(path) holds no PEM certificate: \(OpenSSLErrors.drain())")
        }
        return certificate
    }

    static func readPrivateKey(_ path: String) throws(TLSError) -> OpaquePointer {
        guard let bio = BIO_new_file(path, "r") else { throw TLSError(.configuration, "cannot open \(path)") }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSError(.configuration, "\(path) holds no PEM private key: \(OpenSSLErrors.drain())")
        }
        return key
    }

    /// Writes atomically (a temporary file renamed over the target), so a reloading reader never
    /// sees half a file.
    static func write(_ text: String, to path: String, mode: mode_t) throws(TLSError) {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode)
        guard descriptor >= 0 else { throw TLSError(.configuration, "cannot write \(temporary): errno \(errno)") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw TLSError(.configuration, "cannot write \(path): errno \(errno)")
        }
    }
}
