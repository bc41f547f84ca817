import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Reads one log source's file across its rotations, as spec/LOGS.md §3 orders it: the rest of
/// the cursor's file, each newer rotated file, then the current one; whole lines only; a
/// truncation or a lost file said with a GAP. Blocking POSIX reads: run it on a thread pool, from
/// one task at a time.
final class LogReader: @unchecked Sendable {
    struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    enum Failure: Error, CustomStringConvertible {
        case noFile(String)
        case io(String, Int32)

        var description: String {
            switch self {
            case .noFile(let path): "\(path) does not exist"
            case .io(let what, let code): "\(what): \(String(cString: strerror(code)))"
            }
        }
    }

    let path: String
    private var descriptor: Int32 = -1
    private var file = FileID(device: 0, inode: 0)
    private var offset: UInt64 = 0
    /// The file's size when last seen, for the octets a truncation lost.
    private var lastSize: UInt64 = 0
    private var pending: LogMessage?
    private var buffer = [UInt8](repeating: 0, count: LogMessage.maxLines)

    /// Opens the file `cursor` names (the current one, or a rotated one with its identity), or
    /// the current file from its beginning.
    init(path: String, cursor: LogCursor?) throws(Failure) {
        self.path = path
        guard let cursor else {
            guard let current = Self.status(of: path) else { throw .noFile(path) }
            try self.open(path, id: current.id, at: 0)
            return
        }
        let wanted = FileID(device: cursor.device, inode: cursor.inode)
        let candidates = self.candidates()
        if let found = candidates.first(where: { $0.id == wanted }) {
            try self.open(found.path, id: wanted, at: cursor.offset)
            if found.size < cursor.offset {
                self.pending = .gap(self.cursor(at: 0), lost: 0, reason: "the file was truncated below the cursor")
                self.offset = 0
            }
        } else if let oldest = candidates.min(by: { $0.modified < $1.modified }) {
            try self.open(oldest.path, id: oldest.id, at: 0)
            self.pending = .gap(self.cursor(at: 0), lost: 0, reason: "the cursor's file is gone")
        } else {
            throw .noFile(path)
        }
    }

    deinit {
        if self.descriptor >= 0 { close(self.descriptor) }
    }

    /// The next message, or nil when there is nothing to send now (follow: ask again later).
    func next() throws(Failure) -> LogMessage? {
        if let pending = self.pending {
            self.pending = nil
            return pending
        }
        let read = self.buffer.withUnsafeMutableBytes { bytes in
            pread(self.descriptor, bytes.baseAddress, bytes.count, off_t(self.offset))
        }
        guard read >= 0 else { throw .io("reading \(self.path)", errno) }
        if read > 0 {
            if let lastLineEnd = self.buffer[0..<read].lastIndex(of: UInt8(ascii: "\n")) {
                return self.lines(count: lastLineEnd + 1, addingLineEnd: false)
            }
            // A line longer than a message: sent in pieces (spec/LOGS.md §3).
            if read == self.buffer.count { return self.lines(count: read, addingLineEnd: true) }
        }
        // The end of the file, perhaps after a line still being written.
        var status = stat()
        guard fstat(self.descriptor, &status) == 0 else { throw .io("fstat \(self.path)", errno) }
        let size = UInt64(status.st_size)
        if Self.status(of: self.path)?.id == self.file {
            if size < self.offset {
                let lost = self.lastSize > self.offset ? self.lastSize - self.offset : 0
                self.offset = 0
                self.lastSize = size
                return .gap(self.cursor(at: 0), lost: lost, reason: "the file was truncated")
            }
            self.lastSize = size
            return nil
        }
        // Rotated away: once a newer file is there, this one's last line goes as it is.
        let modified = Self.modified(status)
        guard
            let newer = self.candidates().filter({ $0.id != self.file && $0.modified >= modified })
                .min(by: { $0.modified < $1.modified })
        else { return nil }
        if read > 0 { return self.lines(count: read, addingLineEnd: true) }
        close(self.descriptor)
        self.descriptor = -1
        try self.open(newer.path, id: newer.id, at: 0)
        return try self.next()
    }

    /// Where the next line will be read from.
    var position: LogCursor { self.cursor(at: self.offset) }

    private func lines(count: Int, addingLineEnd: Bool) -> LogMessage {
        var lines = ByteBuffer()
        lines.reserveCapacity(count + 1)
        lines.writeBytes(self.buffer[0..<count])
        if addingLineEnd { lines.writeInteger(UInt8(ascii: "\n")) }
        self.offset += UInt64(count)
        return .lines(self.cursor(at: self.offset), lines)
    }

    private func cursor(at offset: UInt64) -> LogCursor {
        LogCursor(device: self.file.device, inode: self.file.inode, offset: offset)
    }

    private func open(_ path: String, id: FileID, at offset: UInt64) throws(Failure) {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io("opening \(path)", errno) }
        self.descriptor = descriptor
        self.file = id
        self.offset = offset
        self.lastSize = offset
    }

    struct Candidate {
        var path: String
        var id: FileID
        var size: UInt64
        var modified: Double
    }

    /// The current file and its rotated files (spec/LOGS.md §1): regular files only — a rotated
    /// file that is a symbolic link is never followed (the configured path may be one) — and no
    /// compressed rotation.
    private func candidates() -> [Candidate] {
        let directory = (self.path as NSString).deletingLastPathComponent
        let base = (self.path as NSString).lastPathComponent
        let compressed = [".gz", ".xz", ".bz2", ".zst", ".lz4"]
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.isEmpty ? "." : directory)) ?? []
        return names.filter { name in
            name == base
                || ((name.hasPrefix(base + ".") || name.hasPrefix(base + "-")) && !compressed.contains { name.hasSuffix($0) })
        }.compactMap { name in
            let path = directory + "/" + name
            var status = stat()
            let found = name == base ? stat(path, &status) : lstat(path, &status)
            guard found == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
            return Candidate(
                path: path, id: FileID(device: UInt64(status.st_dev), inode: UInt64(status.st_ino)), size: UInt64(status.st_size),
                modified: Self.modified(status))
        }
    }

    private static func status(of path: String) -> (id: FileID, size: UInt64)? {
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
        return (FileID(device: UInt64(status.st_dev), inode: UInt64(status.st_ino)), UInt64(status.st_size))
    }

    private static func modified(_ status: stat) -> Double {
        Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
    }
}
