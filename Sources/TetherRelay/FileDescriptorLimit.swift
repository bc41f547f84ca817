#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process's limit on open file descriptors (`RLIMIT_NOFILE`). Debian's default soft limit is
/// 1,024 — a hub with thousands of edges, each a socket, needs more; the hard limit (often 2²⁰ on a
/// systemd host, `LimitNOFILE=` in the unit) is what the operator allows.
public enum FileDescriptorLimit {
    /// Raises the soft limit to the hard limit and returns the new soft limit; throws when the
    /// limit cannot be read or set.
    @discardableResult
    public static func raiseToHardLimit() throws -> Int {
        var limit = rlimit()
        guard getrlimit(Self.resource, &limit) == 0 else { throw Failure(operation: "getrlimit", errno: errno) }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            guard setrlimit(Self.resource, &limit) == 0 else { throw Failure(operation: "setrlimit", errno: errno) }
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// Raises the soft limit to at least `minimum` — the hard limit too, where that is lower and
    /// the process may raise it (root, `CAP_SYS_RESOURCE`) — and returns the new soft limit.
    @discardableResult
    public static func raise(toAtLeast minimum: Int) throws -> Int {
        var limit = rlimit()
        guard getrlimit(Self.resource, &limit) == 0 else { throw Failure(operation: "getrlimit", errno: errno) }
        if Int(clamping: limit.rlim_max) < minimum {
            var higher = limit
            higher.rlim_max = rlim_t(minimum)
            higher.rlim_cur = rlim_t(minimum)
            if setrlimit(Self.resource, &higher) == 0 { return minimum }
        }
        return try self.raiseToHardLimit()
    }

    /// The current soft limit.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(Self.resource, &limit) == 0 else { return 0 }
        return Int(clamping: limit.rlim_cur)
    }

    #if os(Linux)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif

    public struct Failure: Error, CustomStringConvertible {
        public var operation: String
        public var errno: Int32
        public var description: String { "\(self.operation)(RLIMIT_NOFILE) failed: \(String(cString: strerror(self.errno)))" }
    }
}
