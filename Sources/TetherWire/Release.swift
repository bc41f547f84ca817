/// This build's release: what `tether --version` prints and what the relays announce in
/// `IMPLEMENTATION_VERSION` (spec §3.3).
public enum TetherRelease {
    public static let major: UInt32 = 0
    public static let minor: UInt32 = 18
    public static let patch: UInt32 = 0

    public static var version: String { "\(major).\(minor).\(patch)" }

    /// `IMPLEMENTATION_VERSION`'s value for this release.
    public static var packed: UInt32 { major << 16 | minor << 8 | patch }

    /// `major.minor.patch` of an `IMPLEMENTATION_VERSION` value, or nil for 0 (not said).
    public static func version(packed value: UInt32) -> String? {
        guard value != 0 else { return nil }
        return "\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}
