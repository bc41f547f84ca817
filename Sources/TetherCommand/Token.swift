import ArgumentParser
import Foundation
import TetherTLS

/// `tether token --id NAME`: a new random operator token, and the entry for the relay's
/// `admin.operators` that stores it as its SHA-256 (README "Admin endpoints"). The token itself
/// is printed once and stored nowhere.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an operator token for a relay's admin endpoints, and its configuration entry.")

    @Option(help: "The name logs give the token.")
    var id: String

    func run() throws {
        // 32 octets from the system's CSPRNG (getrandom), as unpadded base64url.
        var generator = SystemRandomNumberGenerator()
        let octets = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let token = Self.base64url(octets)
        let digest = Digest.sha256(Array(token.utf8)).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        print("token: \(token)")
        print("config: - {id: \(self.id), sha256: \(digest)}")
    }

    static func base64url(_ octets: [UInt8]) -> String {
        Data(octets).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
