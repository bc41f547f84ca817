/// Secrets the tests hand to the relays (tokens, proxy passwords, metadata values) carry this
/// marker; `.ci/secrets-check` fails when it appears in any log line of a full run (README "Logs
/// and audit"). Never pass one as a parameterized test's argument: swift-testing prints those.
enum Canary {
    static let marker = "tether-canary"

    /// A fresh secret naming what it stands for: `tether-canary-<what>-<random>`.
    static func secret(_ what: String) -> String {
        "\(Self.marker)-\(what)-\(UInt32.random(in: 0...UInt32.max))"
    }
}
