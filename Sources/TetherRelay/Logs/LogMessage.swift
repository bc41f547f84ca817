import Foundation
import NIOCore

/// A position in one log file (spec/LOGS.md §4): `1.<device>.<inode>.<offset>`, lowercase hex.
public struct LogCursor: Hashable, Sendable, CustomStringConvertible {
    public var device: UInt64
    public var inode: UInt64
    /// The next octet to read.
    public var offset: UInt64

    public init(device: UInt64, inode: UInt64, offset: UInt64) {
        self.device = device
        self.inode = inode
        self.offset = offset
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "1",
            parts[1...].allSatisfy({ !$0.isEmpty && $0.count <= 16 && $0.allSatisfy { $0.isHexDigit && !$0.isUppercase } }),
            let device = UInt64(parts[1], radix: 16), let inode = UInt64(parts[2], radix: 16), let offset = UInt64(parts[3], radix: 16)
        else { return nil }
        self.init(device: device, inode: inode, offset: offset)
    }

    public var description: String {
        "1.\(String(self.device, radix: 16)).\(String(self.inode, radix: 16)).\(String(self.offset, radix: 16))"
    }
}

/// One message of a LOGS stream (spec/LOGS.md §3).
public enum LogMessage: Equatable, Sendable {
    /// Whole lines, each ending with LF, and the cursor after the last.
    case lines(LogCursor, ByteBuffer)
    /// What lies before `cursor` could not be read; `lost` octets are known lost (0: unknown).
    case gap(LogCursor, lost: UInt64, reason: String)
    /// Nothing new: a follow that waits says so every ``LogMessage/idleInterval``, so that the
    /// hub and the consumer know the stream is alive (and the hub, that its client still is).
    case idle(LogCursor)

    static let linesType: UInt8 = 0x01
    static let gapType: UInt8 = 0x02
    static let idleType: UInt8 = 0x03
    /// How often a waiting follow sends IDLE (spec/LOGS.md §3).
    public static let idleInterval: Duration = .seconds(5)
    /// The most octets of lines one message carries (spec/LOGS.md §3).
    public static let maxLines = 65_536

    public var cursor: LogCursor {
        switch self {
        case .lines(let cursor, _), .gap(let cursor, _, _), .idle(let cursor): cursor
        }
    }

    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        func writeCursor(_ cursor: LogCursor) {
            let text = cursor.description
            buffer.writeInteger(UInt8(text.utf8.count))
            buffer.writeString(text)
        }
        switch self {
        case .lines(let cursor, var lines):
            buffer.reserveCapacity(lines.readableBytes + 40)
            buffer.writeInteger(Self.linesType)
            writeCursor(cursor)
            buffer.writeBuffer(&lines)
        case .gap(let cursor, let lost, let reason):
            buffer.writeInteger(Self.gapType)
            writeCursor(cursor)
            buffer.writeInteger(lost)
            buffer.writeString(reason)
        case .idle(let cursor):
            buffer.writeInteger(Self.idleType)
            writeCursor(cursor)
        }
        return buffer
    }

    /// Reads one message; nil for anything spec/LOGS.md §3 does not allow.
    public init?(decoding message: ByteBuffer) {
        var message = message
        guard let type = message.readInteger(as: UInt8.self), let length = message.readInteger(as: UInt8.self), length > 0,
            let text = message.readString(length: Int(length)), let cursor = LogCursor(text)
        else { return nil }
        switch type {
        case Self.linesType:
            guard message.readableBytes > 0, message.readableBytesView.last == UInt8(ascii: "\n") else { return nil }
            self = .lines(cursor, message)
        case Self.gapType:
            guard let lost = message.readInteger(as: UInt64.self), let reason = message.readString(length: message.readableBytes)
            else { return nil }
            self = .gap(cursor, lost: lost, reason: reason)
        case Self.idleType:
            guard message.readableBytes == 0 else { return nil }
            self = .idle(cursor)
        default:
            return nil
        }
    }
}

extension LogMessage {
    /// The hub's NDJSON line for this message (spec/LOGS.md §5): `{"cursor","lines"}` (no lines
    /// for IDLE) or `{"cursor","gap":{"octets","reason"}}`; lines without their LF, octets that are not UTF-8
    /// as U+FFFD.
    func ndjson() throws -> ByteBuffer {
        struct Lines: Encodable {
            var cursor: String
            var lines: [String]
        }
        struct Gap: Encodable {
            struct Lost: Encodable {
                var octets: UInt64
                var reason: String
            }
            var cursor: String
            var gap: Lost
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var line: ByteBuffer
        switch self {
        case .lines(let cursor, let bytes):
            let lines = bytes.readableBytesView.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
            let text = lines.map { String(decoding: $0, as: UTF8.self) }
            line = ByteBuffer(data: try encoder.encode(Lines(cursor: "\(cursor)", lines: text)))
        case .gap(let cursor, let lost, let reason):
            line = ByteBuffer(data: try encoder.encode(Gap(cursor: "\(cursor)", gap: .init(octets: lost, reason: reason))))
        case .idle(let cursor):
            line = ByteBuffer(data: try encoder.encode(Lines(cursor: "\(cursor)", lines: [])))
        }
        line.writeInteger(UInt8(ascii: "\n"))
        return line
    }
}
