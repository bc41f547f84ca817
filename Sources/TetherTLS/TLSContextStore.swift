#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers

/// The current ``TLSContext`` for new connections, rebuilt when its files change (spec §2.1:
/// certificate files reload without restart). Live connections keep the context they started with.
public final class TLSContextStore: Sendable {
    private struct Loaded {
        var context: TLSContext
        var fingerprint: [FileFingerprint]
    }

    private let state: NIOLockedValueBox<Loaded>
    public let configuration: TLSConfiguration

    public init(configuration: TLSConfiguration) throws(TLSError) {
        self.configuration = configuration
        let fingerprint = Self.fingerprint(configuration.files)
        self.state = NIOLockedValueBox(Loaded(context: try TLSContext(configuration: configuration), fingerprint: fingerprint))
    }

    /// The context new connections use.
    public var current: TLSContext { self.state.withLockedValue { $0.context } }

    /// Rebuilds the context if any file changed since the last load. A new context replaces the
    /// old one only if it builds; otherwise the old one stays in use and the error is thrown, so a
    /// half-written or wrong file never takes the service down. Returns whether it reloaded.
    @discardableResult
    public func reloadIfChanged() throws(TLSError) -> Bool {
        let fingerprint = Self.fingerprint(self.configuration.files)
        guard fingerprint != self.state.withLockedValue({ $0.fingerprint }) else { return false }
        let context = try TLSContext(configuration: self.configuration)
        self.state.withLockedValue { $0 = Loaded(context: context, fingerprint: fingerprint) }
        return true
    }

    private struct FileFingerprint: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedSeconds: Int
        var modifiedNanoseconds: Int
    }

    private static func fingerprint(_ files: [String]) -> [FileFingerprint] {
        files.map { path in
            var info = stat()
            guard stat(path, &info) == 0 else { return FileFingerprint(device: 0, inode: 0, size: -1, modifiedSeconds: 0, modifiedNanoseconds: 0) }
            return FileFingerprint(
                device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                modifiedSeconds: Int(info.st_mtim.tv_sec), modifiedNanoseconds: Int(info.st_mtim.tv_nsec))
        }
    }
}
