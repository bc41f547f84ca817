import Foundation
import TetherWire

/// The hub's list of revoked identities (README "Configuration", `revoked`): one
/// `tether://<tenant>/<agent-id>` per line; blank lines and `#` comments are ignored. A revoked
/// identity is refused at admission, and a live one is drained when a reload names it (spec §10.3).
public struct RevocationList: Sendable, Hashable {
    public var identities: Set<TetherIdentity>

    public init(_ identities: Set<TetherIdentity> = []) {
        self.identities = identities
    }

    /// Reads `path`; a line that is not an identity is an error naming the file and line.
    public static func load(path: String) throws(ConfigError) -> RevocationList {
        try self.parse(try ConfigError.readText(of: path), file: path)
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> RevocationList {
        var identities = Set<TetherIdentity>()
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let entry = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                .trimmingCharacters(in: .whitespaces)
            guard !entry.isEmpty else { continue }
            guard let identity = TetherIdentity(uri: entry) else {
                throw ConfigError(
                    file: file, line: index + 1, column: 1, path: "",
                    message: "expected an identity such as tether://acme/node-1, found \"\(entry)\"")
            }
            identities.insert(identity)
        }
        return RevocationList(identities)
    }

    public func contains(_ identity: TetherIdentity) -> Bool { self.identities.contains(identity) }
}
