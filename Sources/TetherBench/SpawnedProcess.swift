import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, its output appended to a log file.
/// `tether bench fleet` restarts the hub while it holds 10,000 sockets: Foundation's `Process.run`
/// copies the numbers of the open descriptors before it spawns, and crashed there (a bad pointer
/// in its memcpy) in one of three 10,000-edge runs. The bench's sockets are close-on-exec, so the
/// child inherits none.
final class SpawnedProcess: Sendable {
    let processIdentifier: pid_t

    init(_ executable: String, _ arguments: [String], log: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard result == 0 else { throw RelayDaemonsError("posix_spawn \(executable): \(String(cString: strerror(result)))") }
        self.processIdentifier = pid
    }

    /// Whether it has not exited (reaps it if it has).
    var isRunning: Bool {
        var status: Int32 = 0
        return waitpid(self.processIdentifier, &status, WNOHANG) == 0
    }

    func signal(_ signal: Int32) { kill(self.processIdentifier, signal) }

    func waitUntilExit() {
        var status: Int32 = 0
        while waitpid(self.processIdentifier, &status, 0) == -1 && errno == EINTR {}
    }
}
