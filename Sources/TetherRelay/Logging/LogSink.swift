#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers

/// Where log lines go: standard error, standard output, or a file opened for appending. Each line
/// is one `write(2)` under a lock, so lines from many threads never interleave; a file is opened
/// again by ``reopen()`` (SIGHUP: after logrotate moved it away).
public final class LogSink: Sendable {
    private enum Target {
        case descriptor(Int32)
        case file(path: String, descriptor: Int32)
    }

    private let target: NIOLockedValueBox<Target>

    public static let standardError = LogSink(descriptor: STDERR_FILENO)
    public static let standardOutput = LogSink(descriptor: STDOUT_FILENO)

    private init(descriptor: Int32) {
        self.target = NIOLockedValueBox(.descriptor(descriptor))
    }

    /// Appends to `path`, created with mode 0640 when missing.
    public init(appendingTo path: String) throws(RelayError) {
        let descriptor = try Self.open(path)
        self.target = NIOLockedValueBox(.file(path: path, descriptor: descriptor))
    }

    deinit {
        if case .file(_, let descriptor) = self.target.withLockedValue({ $0 }) { close(descriptor) }
    }

    /// Writes `line` (which ends with a line feed) whole.
    public func write(_ line: [UInt8]) {
        self.target.withLockedValue { target in
            let descriptor: Int32
            switch target {
            case .descriptor(let fd), .file(_, let fd): descriptor = fd
            }
            line.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0 && errno == EINTR {
                        continue
                    } else {
                        return  // a full disk or a closed pipe: the line is lost, the relay goes on
                    }
                }
            }
        }
    }

    /// Opens a file sink's path again; the old descriptor is closed once the new one is open.
    public func reopen() throws(RelayError) {
        guard case .file(let path, _) = self.target.withLockedValue({ $0 }) else { return }
        let fresh = try Self.open(path)
        let old = self.target.withLockedValue { target -> Int32? in
            guard case .file(let path, let old) = target else { return nil }
            target = .file(path: path, descriptor: fresh)
            return old
        }
        if let old { close(old) }
    }

    private static func open(_ path: String) throws(RelayError) -> Int32 {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw RelayError("cannot open \(path) for appending: \(String(cString: strerror(errno)))") }
        return descriptor
    }
}
