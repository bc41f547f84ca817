import Foundation
import NIOCore
import Testing

@testable import TetherRelay

/// The edge's reader of a log source (spec/LOGS.md §1–§4) on real files: whole lines, rotations
/// by renaming followed to the end of each file, truncation and lost files said with a GAP, and
/// every line exactly once from any cursor.
@Suite struct LogReaderTests {
    final class LogDirectory {
        let path = NSTemporaryDirectory() + "tether-logs-\(UInt32.random(in: 0...UInt32.max))"
        var log: String { self.path + "/kube.log" }
        private var next = 0

        init() throws { try FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(atPath: self.path) }

        /// Appends `count` numbered lines (`line 7`) to the current file.
        func write(_ count: Int) throws {
            var text = ""
            for _ in 0..<count {
                text += "line \(self.next)\n"
                self.next += 1
            }
            try self.append(text)
        }

        func append(_ text: String) throws {
            if !FileManager.default.fileExists(atPath: self.log) { FileManager.default.createFile(atPath: self.log, contents: nil) }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: self.log))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(text.utf8))
            try handle.close()
        }

        var written: Int { self.next }

        /// logrotate's rename and create: kube.log.N → N+1, kube.log → kube.log.1, a new kube.log.
        func rotate() throws {
            let manager = FileManager.default
            var generation = 1
            while manager.fileExists(atPath: self.log + ".\(generation)") { generation += 1 }
            for older in stride(from: generation - 1, through: 1, by: -1) {
                try manager.moveItem(atPath: self.log + ".\(older)", toPath: self.log + ".\(older + 1)")
            }
            try manager.moveItem(atPath: self.log, toPath: self.log + ".1")
            manager.createFile(atPath: self.log, contents: nil)
        }
    }

    /// Every message until the reader has nothing more now.
    static func drain(_ reader: LogReader) throws -> [LogMessage] {
        var messages: [LogMessage] = []
        while let message = try reader.next() { messages.append(message) }
        return messages
    }

    static func lines(_ messages: [LogMessage]) -> [String] {
        messages.flatMap { message -> [String] in
            guard case .lines(_, let bytes) = message else { return [] }
            return String(buffer: bytes).split(separator: "\n").map(String.init)
        }
    }

    static func numbered(_ range: Range<Int>) -> [String] { range.map { "line \($0)" } }

    @Test func cursorsAndMessagesRoundTrip() throws {
        let cursor = LogCursor(device: 0x803, inode: 0x1a2b3, offset: 0)
        #expect(cursor.description == "1.803.1a2b3.0")
        #expect(LogCursor("1.803.1a2b3.0") == cursor)
        for bad in ["", "2.803.1.0", "1.803.1", "1.803.1.0.0", "1.803.1A.0", "1.-3.1.0", "1.803..0", "1.11111111111111111.1.0"] {
            #expect(LogCursor(bad) == nil, "\(bad)")
        }
        let messages: [LogMessage] = [
            .lines(cursor, ByteBuffer(string: "a\nb\n")), .gap(cursor, lost: 42, reason: "the file was truncated"), .idle(cursor),
        ]
        for message in messages { #expect(LogMessage(decoding: message.encoded()) == message) }
        #expect(LogMessage(decoding: ByteBuffer(bytes: [0x01, 13] + Array("1.803.1a2b3.0".utf8) + Array("no line end".utf8))) == nil)
        #expect(LogMessage(decoding: ByteBuffer(bytes: [0x04, 13] + Array("1.803.1a2b3.0".utf8))) == nil, "no such type")
        #expect(LogMessage(decoding: ByteBuffer(bytes: [0x03, 13] + Array("1.803.1a2b3.0x".utf8))) == nil, "IDLE carries nothing more")
    }

    /// The hub's NDJSON (spec/LOGS.md §5), read back by Foundation's JSON parser: escapes, control
    /// octets, UTF-8, and octets that are not UTF-8 as U+FFFD.
    @Test func theHubsNDJSONIsJSONWhateverTheLinesHold() throws {
        let cursor = LogCursor(device: 1, inode: 2, offset: 3)
        var lines = ByteBuffer(string: "plain\n\"quoted\" \\ back\ttab\rcr\u{1}\u{7F}\nété 日本\n\n")
        lines.writeBytes([0x62, 0x61, 0x64, 0xFF, 0xC3, 0x0A])  // "bad", an invalid octet, a cut sequence
        func parsed(_ message: LogMessage) throws -> [String: Any] {
            var line = message.ndjson()
            #expect(line.readableBytesView.last == UInt8(ascii: "\n"))
            line.moveWriterIndex(to: line.writerIndex - 1)
            return try #require(try JSONSerialization.jsonObject(with: Data(line.readableBytesView)) as? [String: Any])
        }
        let object = try parsed(.lines(cursor, lines))
        #expect(object["cursor"] as? String == "1.1.2.3")
        #expect(object["lines"] as? [String] == ["plain", "\"quoted\" \\ back\ttab\rcr\u{1}\u{7F}", "été 日本", "", "bad\u{FFFD}\u{FFFD}"])
        let gap = try parsed(.gap(cursor, lost: 42, reason: "the \"file\" was truncated"))
        #expect((gap["gap"] as? [String: Any])?["octets"] as? Int == 42)
        #expect((gap["gap"] as? [String: Any])?["reason"] as? String == "the \"file\" was truncated")
        #expect(try parsed(.idle(cursor))["lines"] as? [String] == [])
    }

    @Test func wholeLinesOnlyAndALineIsSentOnceItEnds() throws {
        let directory = try LogDirectory()
        try directory.write(3)
        try directory.append("half a ")
        let reader = try LogReader(path: directory.log, cursor: nil)
        #expect(Self.lines(try Self.drain(reader)) == Self.numbered(0..<3))
        #expect(try reader.next() == nil, "the unfinished line waits")
        try directory.append("line\n")
        #expect(Self.lines(try Self.drain(reader)) == ["half a line"])
    }

    /// Renamed twice while nobody read: from a cursor in the oldest file, the rest of it, then the
    /// next, then the current one — each line once, in order.
    @Test func aCursorIsFollowedAcrossTwoRotationsByRenaming() throws {
        let directory = try LogDirectory()
        try directory.write(10)
        let first = try LogReader(path: directory.log, cursor: nil)
        let read = try Self.drain(first)
        #expect(Self.lines(read) == Self.numbered(0..<10))
        let cursor = try #require(read.last?.cursor)
        try directory.write(5)
        try directory.rotate()
        try directory.write(7)
        try directory.rotate()
        try directory.write(4)
        let resumed = try LogReader(path: directory.log, cursor: cursor)
        #expect(Self.lines(try Self.drain(resumed)) == Self.numbered(10..<26))
        // And the reader that kept going sees the same, then new lines of the current file.
        #expect(Self.lines(try Self.drain(first)) == Self.numbered(10..<26))
        try directory.write(2)
        #expect(Self.lines(try Self.drain(first)) == Self.numbered(26..<28))
    }

    /// A rotated file's last line without a line end goes as it is, with one, before the next file.
    @Test func aRotatedFilesLastLineGoesWithALineEnd() throws {
        let directory = try LogDirectory()
        try directory.write(2)
        try directory.append("unfinished")
        let reader = try LogReader(path: directory.log, cursor: nil)
        #expect(Self.lines(try Self.drain(reader)) == Self.numbered(0..<2))
        try directory.rotate()
        try directory.write(1)
        #expect(Self.lines(try Self.drain(reader)) == ["unfinished", "line 2"])
    }

    /// Copy and truncate: what the reader had seen and not sent (a line still being written) is
    /// counted as lost; what was written after it last looked cannot be counted (spec/LOGS.md §3).
    @Test func aTruncationIsAGapNeverHidden() throws {
        let directory = try LogDirectory()
        try directory.write(20)
        try directory.append("partial")
        let reader = try LogReader(path: directory.log, cursor: nil)
        #expect(Self.lines(try Self.drain(reader)) == Self.numbered(0..<20))
        try FileHandle(forWritingTo: URL(fileURLWithPath: directory.log)).truncate(atOffset: 0)
        try directory.write(2)
        let messages = try Self.drain(reader)
        guard case .gap(let cursor, let lost, let reason) = messages.first else {
            Issue.record("no gap first: \(messages)")
            return
        }
        #expect(cursor.offset == 0 && reason.contains("truncated"))
        #expect(lost == 7, "the unfinished line")
        #expect(Self.lines(Array(messages.dropFirst())) == Self.numbered(20..<22))
    }

    @Test func aCursorWhoseFileIsGoneIsAGapThenTheOldestFile() throws {
        let directory = try LogDirectory()
        try directory.write(4)
        let cursor = try #require(try Self.drain(try LogReader(path: directory.log, cursor: nil)).last?.cursor)
        try directory.rotate()
        try directory.write(3)
        try directory.rotate()
        try FileManager.default.removeItem(atPath: directory.log + ".2")  // the cursor's file
        try directory.write(2)
        let messages = try Self.drain(try LogReader(path: directory.log, cursor: cursor))
        guard case .gap(_, _, let reason) = messages.first else {
            Issue.record("no gap first: \(messages)")
            return
        }
        #expect(reason.contains("gone"))
        #expect(Self.lines(messages) == Self.numbered(4..<9))
    }

    @Test func aRotatedFileThatIsALinkIsNeverFollowed() throws {
        let directory = try LogDirectory()
        try directory.write(1)
        let outside = directory.path + "-outside.log"
        try "secret line\n".write(toFile: outside, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: directory.log + ".9", withDestinationPath: outside)
        let reader = try LogReader(path: directory.log, cursor: LogCursor(device: 1, inode: 1, offset: 0))
        #expect(!Self.lines(try Self.drain(reader)).contains("secret line"))
    }
}
