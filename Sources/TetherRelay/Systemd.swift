#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// `sd_notify(3)`, hand-written (README "systemd"): one datagram to the Unix socket that
/// `$NOTIFY_SOCKET` names — a path, or `@name` in the abstract namespace. Nil when the variable
/// is not set (not started by systemd with `Type=notify`).
public struct SystemdNotifier: Sendable {
    public let socketPath: String

    public init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], path.hasPrefix("/") || path.hasPrefix("@") else { return nil }
        self.socketPath = path
    }

    /// Sends `state`, newline-separated assignments such as `READY=1` or `STOPPING=1`.
    public func notify(_ state: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(self.socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { throw IOError(errnoCode: ENAMETOOLONG, reason: "NOTIFY_SOCKET") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + path.count)
        let sent = Array(state.utf8).withUnsafeBytes { message in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, message.baseAddress, message.count, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        guard sent >= 0 else { throw IOError(errnoCode: errno, reason: "sendto \(self.socketPath)") }
    }

    /// `RELOADING=1` with the monotonic clock, as systemd's `Type=notify-reload` expects; send
    /// `READY=1` when the reload is done.
    public func notifyReloading() throws {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        try self.notify("RELOADING=1\nMONOTONIC_USEC=\(Int(now.tv_sec) * 1_000_000 + Int(now.tv_nsec) / 1_000)")
    }
}

/// systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only once
/// a task has run on **every** event loop of the relay since the last one. A loop that is stuck —
/// a blocking call, a task that re-arms itself forever — holds the round, the pings stop, and
/// systemd restarts the process.
public struct SystemdWatchdog: Service {
    let notifier: SystemdNotifier
    let interval: TimeAmount
    let group: any EventLoopGroup

    public init(notifier: SystemdNotifier, interval: TimeAmount, group: any EventLoopGroup) {
        self.notifier = notifier
        self.interval = interval
        self.group = group
    }

    /// Half of `$WATCHDOG_USEC`, when it is set for this process (`$WATCHDOG_PID`, if present,
    /// names it); nil otherwise.
    public static func interval(environment: [String: String] = ProcessInfo.processInfo.environment) -> TimeAmount? {
        if let pid = environment["WATCHDOG_PID"], pid != "\(getpid())" { return nil }
        guard let text = environment["WATCHDOG_USEC"], let usec = Int64(text), usec > 0 else { return nil }
        return .microseconds(usec / 2)
    }

    public func run() async throws {
        let loops = Array(self.group.makeIterator())
        let waiting = NIOLockedValueBox(0)  // loops that have not run this round's task yet
        func startRound() {
            waiting.withLockedValue { $0 = loops.count }
            for loop in loops { loop.execute { waiting.withLockedValue { $0 -= 1 } } }
        }
        startRound()
        while !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .nanoseconds(self.interval.nanoseconds)) }
            } catch {
                return
            }
            // A loop that has not run its task holds the round: no ping until it does.
            guard waiting.withLockedValue({ $0 }) == 0 else { continue }
            try? self.notifier.notify("WATCHDOG=1")
            startRound()
        }
    }
}
