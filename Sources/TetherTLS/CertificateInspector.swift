#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSL
import TetherWire

/// Reads what Tether needs from an X.509 certificate.
enum CertificateInspector {
    /// The certificate's URI subjectAltNames, in order.
    static func uriNames(of certificate: OpaquePointer) -> [String] {
        guard let raw = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) else { return [] }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var uris: [String] = []
        for index in 0..<tether_sk_GENERAL_NAME_num(names) {
            guard let name = tether_sk_GENERAL_NAME_value(names, index), name.pointee.type == GEN_URI,
                let value = name.pointee.d.uniformResourceIdentifier,
                let bytes = ASN1_STRING_get0_data(value)
            else { continue }
            let buffer = UnsafeBufferPointer(start: bytes, count: Int(ASN1_STRING_length(value)))
            uris.append(String(decoding: buffer, as: UTF8.self))
        }
        return uris
    }

    /// SHA-256 of the DER encoding, as lower-case hex.
    static func sha256(of certificate: OpaquePointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(certificate, EVP_sha256(), &digest, &length) == 1 else { return "" }
        return digest.prefix(Int(length)).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The end of the certificate's validity, in seconds since 1970 (UTC).
    static func notAfter(of certificate: OpaquePointer) -> Int64? {
        var time = tm()
        guard let notAfter = X509_get0_notAfter(certificate), ASN1_TIME_to_tm(notAfter, &time) == 1 else { return nil }
        return Int64(timegm(&time))
    }

    /// The identity of spec §2.2: exactly one URI SAN, `tether://<tenant>/<agent-id>`. The subject
    /// common name is never read.
    static func identity(of certificate: OpaquePointer) -> Result<TetherIdentity, TLSError> {
        let uris = self.uriNames(of: certificate)
        guard uris.count == 1 else {
            return .failure(
                TLSError(.invalidIdentity, "the certificate has \(uris.count) URI SANs; exactly one is required"))
        }
        guard let identity = TetherIdentity(uri: uris[0]) else {
            return .failure(TLSError(.invalidIdentity, "the URI SAN \(uris[0]) is not tether://<tenant>/<agent-id>"))
        }
        return .success(identity)
    }
}
