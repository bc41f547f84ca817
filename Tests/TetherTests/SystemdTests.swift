import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Logging
import Testing

@testable import TetherRelay

/// The relays under systemd (README "systemd"): `sd_notify` datagrams on a test `NOTIFY_SOCKET`,
/// and a watchdog whose pings stop while an event loop is stuck.
@Suite(.serialized) struct SystemdTests {
    /// A Unix datagram socket standing in for systemd's notification socket, read by a thread of
    /// its own (a plain socket, as systemd's is; NIO's datagram channel wants named senders).
    final class NotifySocket: Sendable {
        let path: String
        let received: NIOLockedValueBox<[String]>
        private let fd: Int32
        private let done: NIOLockedValueBox<Bool>

        init() async throws {
            let path = NSTemporaryDirectory() + "tether-notify-\(UInt32.random(in: 0...UInt32.max)).sock"
            self.path = path
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard fd >= 0, bound == 0 else { throw IOError(errnoCode: errno, reason: "bind \(path)") }
            var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            self.fd = fd
            let received = NIOLockedValueBox([String]())
            let done = NIOLockedValueBox(false)
            self.received = received
            self.done = done
            Thread.detachNewThread {
                var buffer = [UInt8](repeating: 0, count: 4_096)
                while !done.withLockedValue({ $0 }) {
                    let count = recv(fd, &buffer, buffer.count, 0)
                    if count > 0 { received.withLockedValue { $0.append(String(decoding: buffer[0..<count], as: UTF8.self)) } }
                }
                Glibc.close(fd)
            }
        }

        func count(_ state: String) -> Int { self.received.withLockedValue { $0.filter { $0.contains(state) }.count } }

        /// Waits until `state` has arrived `times` times in all (at most 60 s: a readiness wait,
        /// not a measure).
        func wait(for state: String, times: Int = 1) async throws {
            for _ in 0..<6_000 where self.count(state) < times { try await Task.sleep(for: .milliseconds(10)) }
            #expect(self.count(state) >= times, "\(state) × \(times); got \(self.received.withLockedValue { $0 })")
        }

        func close() async throws {
            self.done.withLockedValue { $0 = true }
            try? FileManager.default.removeItem(atPath: self.path)
        }
    }

    @Test func theEnvironmentNamesTheSocketAndTheWatchdog() {
        #expect(SystemdNotifier(environment: [:]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative.sock"]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@abstract"])?.socketPath == "@abstract")
        #expect(SystemdWatchdog.interval(environment: ["WATCHDOG_USEC": "30000000"]) == .seconds(15))
        #expect(SystemdWatchdog.interval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"]) == nil)
        #expect(SystemdWatchdog.interval(environment: ["WATCHDOG_USEC": "0"]) == nil)
    }

    /// WATCHDOG=1 needs a task to have run on every loop: one blocked loop stops the pings, and
    /// they come back when it runs again.
    @Test func aBlockedEventLoopStopsTheWatchdogsPings() async throws {
        let socket = try await NotifySocket()
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let watchdog = SystemdWatchdog(
            notifier: SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.path])!, interval: .milliseconds(20), group: loops)
        let services = ServiceGroup(services: [watchdog], logger: Logger(label: "test"))
        let running = Task { try await services.run() }
        try await socket.wait(for: "WATCHDOG=1", times: 3)

        let release = DispatchSemaphore(value: 0)
        let blocked = DispatchSemaphore(value: 0)
        let stuck = Array(loops.makeIterator())[1]
        stuck.execute {
            blocked.signal()
            release.wait()  // a loop stuck in a blocking call
        }
        blocked.wait()
        let atBlock = socket.count("WATCHDOG=1")
        try await Task.sleep(for: .seconds(1))  // 50 intervals
        // At most the round that had already passed both loops before the block.
        #expect(socket.count("WATCHDOG=1") <= atBlock + 1)
        release.signal()
        try await socket.wait(for: "WATCHDOG=1", times: atBlock + 3)

        await services.triggerGracefulShutdown()
        try await running.value
        try await loops.shutdownGracefully()
        try await socket.close()
    }

    /// A real `tether edge`: READY once its listeners are bound, RELOADING then READY around a
    /// SIGHUP, watchdog pings, STOPPING on SIGTERM, and exit 0.
    @Test func theEdgeTellsSystemdWhereItIs() async throws {
        let socket = try await NotifySocket()
        let site = try await RelayProcessTests.Site(echoPort: 9)  // no hub needed: it keeps dialing
        defer { site.certificates.remove() }
        let process = Process()
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.executableURL = me.deletingLastPathComponent().appendingPathComponent("tether")
        process.arguments = ["edge", "--config", site.directory + "/edge.yaml"]
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = socket.path
        environment["WATCHDOG_USEC"] = "200000"
        process.environment = environment
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        try await socket.wait(for: "READY=1")
        #expect(FileManager.default.fileExists(atPath: site.forward))  // listening when it said so
        try await socket.wait(for: "WATCHDOG=1", times: 2)
        kill(process.processIdentifier, SIGHUP)
        try await socket.wait(for: "RELOADING=1")
        try await socket.wait(for: "READY=1", times: 2)
        process.terminate()
        try await socket.wait(for: "STOPPING=1")
        while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(process.terminationStatus == 0)
        try await socket.close()
    }
}
