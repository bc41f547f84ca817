import Foundation
import TetherTLS
import Testing

@testable import TetherRelay

/// The tokens plane programs present to the hub (issue 18's front door): where the secret is in
/// the header, and which stored token it is.
@Suite struct PlaneTokenTests {
    @Test(arguments: [
        ("Bearer s3cr3t", "s3cr3t"),
        ("bearer   s3cr3t", "s3cr3t"),
        ("Basic " + Data("alice:s3cr3t".utf8).base64EncodedString(), "s3cr3t"),
        ("BASIC " + Data(":s3cr3t:with:colons".utf8).base64EncodedString(), "s3cr3t:with:colons"),
    ])
    func theSecretIsTheBearerTokenOrTheBasicPassword(_ header: String, _ secret: String) {
        #expect(TokenMatch.secret(inAuthorization: header) == Substring(secret))
    }

    @Test(arguments: [
        "s3cr3t", "Bearer", "Bearer ", "Digest s3cr3t", "Basic not-base64!",
        "Basic " + Data("alice".utf8).base64EncodedString(),  // no password
        "Basic " + Data("alice:".utf8).base64EncodedString(),  // an empty one
    ])
    func anythingElseCarriesNoSecret(_ header: String) {
        #expect(TokenMatch.secret(inAuthorization: header) == nil)
    }

    @Test func thePresentedSecretFindsItsTokenAmongSeveral() {
        let tokens = ["alpha", "beta", "gamma"].map { secret in
            PlaneToken(id: secret, tenant: "t-\(secret)", user: "\(secret)@example.com", sha256: Digest.sha256(Array(secret.utf8)))
        }
        #expect(TokenMatch.first("beta", in: tokens, digest: \.sha256)?.tenant == "t-beta")
        #expect(TokenMatch.first("gamma", in: tokens, digest: \.sha256)?.user == "gamma@example.com")
        #expect(TokenMatch.first("delta", in: tokens, digest: \.sha256) == nil)
        #expect(TokenMatch.first("Beta", in: tokens, digest: \.sha256) == nil)
        #expect(TokenMatch.first("beta", in: [PlaneToken](), digest: \.sha256) == nil)
    }
}
