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
    /// for IDLE) or `{"cursor","gap":{"octets","reason"}}`; lines without their LF, octets that are
    /// not UTF-8 as U+FFFD. Written octet by octet: at 64 KiB of lines per message, an encoder
    /// and a `String` per line would cost more than the rest of the hub's path.
    func ndjson() -> ByteBuffer {
        var line = ByteBuffer()
        line.writeStaticString(#"{"cursor":""#)
        line.writeString(self.cursor.description)
        switch self {
        case .lines(_, let bytes):
            line.reserveCapacity(bytes.readableBytes + bytes.readableBytes / 8 + 64)
            line.writeStaticString(#"","lines":["#)
            var first = true
            for text in bytes.readableBytesView.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
                if !first { line.writeInteger(UInt8(ascii: ",")) }
                first = false
                Self.writeJSONString(text, to: &line)
            }
            line.writeStaticString("]}")
        case .gap(_, let lost, let reason):
            line.writeStaticString(#"","gap":{"octets":"#)
            line.writeString("\(lost)")
            line.writeStaticString(#","reason":"#)
            Self.writeJSONString(reason.utf8, to: &line)
            line.writeStaticString("}}")
        case .idle:
            line.writeStaticString(#"","lines":[]}"#)
        }
        line.writeInteger(UInt8(ascii: "\n"))
        return line
    }

    /// `text` as a JSON string (RFC 8259 §7); a line that is not UTF-8 has U+FFFD for what is not.
    /// Runs that need no escape are copied whole.
    static func writeJSONString(_ text: some Collection<UInt8>, to line: inout ByteBuffer) {
        guard text.allSatisfy({ $0 < 0x80 }) else {
            return Self.writeEscaped(Array(String(decoding: text, as: UTF8.self).utf8), to: &line)
        }
        Self.writeEscaped(text, to: &line)
    }

    private static func writeEscaped<Text: Collection<UInt8>>(_ text: Text, to line: inout ByteBuffer) {
        line.writeInteger(UInt8(ascii: "\""))
        var run = text.startIndex
        var index = text.startIndex
        while index < text.endIndex {
            let octet = text[index]
            if octet >= 0x20 && octet != 0x7F && octet != UInt8(ascii: "\"") && octet != UInt8(ascii: "\\") {
                text.formIndex(after: &index)
                continue
            }
            line.writeBytes(text[run..<index])
            switch octet {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                line.writeInteger(UInt8(ascii: "\\"))
                line.writeInteger(octet)
            case UInt8(ascii: "\t"): line.writeStaticString("\\t")
            case UInt8(ascii: "\r"): line.writeStaticString("\\r")
            default:
                line.writeStaticString("\\u00")
                line.writeInteger(Self.hex[Int(octet >> 4)])
                line.writeInteger(Self.hex[Int(octet & 15)])
            }
            text.formIndex(after: &index)
            run = index
        }
        line.writeBytes(text[run..<index])
        line.writeInteger(UInt8(ascii: "\""))
    }

    private static let hex = Array("0123456789abcdef".utf8)
}
