import Foundation
import TetherTLS

/// A token a program in the plane presents to the hub, scoped to one tenant and one plane user
/// (spec/PROTOCOL.md §5.2.1: the user goes into `tether.user`, so the edge audits who touched the
/// node). Kept as its SHA-256 (`tether token` makes one), compared in constant time.
public struct PlaneToken: Sendable, Equatable {
    /// Names the token in logs; never the token itself.
    public var id: String
    public var tenant: String
    public var user: String
    public var sha256: [UInt8]

    public init(id: String, tenant: String, user: String, sha256: [UInt8]) {
        self.id = id
        self.tenant = tenant
        self.user = user
        self.sha256 = sha256
    }
}

/// Finding the stored token a presented secret is.
enum TokenMatch {
    /// The entry whose digest is the presented secret's SHA-256, comparing every stored digest
    /// whether or not an earlier one matched: how long it takes says nothing of which matched.
    static func first<Token>(_ presented: some StringProtocol, in tokens: [Token], digest: (Token) -> [UInt8]) -> Token? {
        let presentedDigest = Digest.sha256(Array(presented.utf8))
        var found: Token?
        for token in tokens where Digest.constantTimeEqual(digest(token), presentedDigest) && found == nil {
            found = token
        }
        return found
    }

    /// The secret in an `Authorization` or `Proxy-Authorization` value: `Bearer <token>`, or
    /// `Basic base64(user:token)` — the password is the token and the user name is not looked at
    /// (kubectl's `proxy-url` can carry only `user:password@`). Schemes are case-insensitive
    /// (RFC 9110 §11.1). Nil for anything else.
    static func secret(inAuthorization value: String) -> Substring? {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let credentials = parts[1].drop { $0 == " " }
        switch parts[0].lowercased() {
        case "bearer":
            return credentials.isEmpty ? nil : credentials
        case "basic":
            guard let decoded = Data(base64Encoded: String(credentials)), let pair = String(data: decoded, encoding: .utf8),
                let colon = pair.firstIndex(of: ":")
            else { return nil }
            let password = pair[pair.index(after: colon)...]
            return password.isEmpty ? nil : Substring(password)
        default:
            return nil
        }
    }
}
