import NIOCore

/// One line of an NDJSON metadata feed (README "Metadata"), as the edge's listener sees it.
enum MetadataLine: Equatable {
    /// A line's content, without its line end (`\n`, or `\r\n`).
    case document(ByteBuffer)
    /// An empty line, or one of spaces and tabs: skipped, but counted, so the line numbers of
    /// replies match the sender's.
    case blank
    /// A line longer than the limit: its octets were thrown away as they arrived, never held.
    case tooLong(octets: Int)
}

/// Splits an NDJSON feed into lines, holding at most `maximumLength` octets of one line: a longer
/// line is skipped to its end and reported, and the next line is read as usual. At the end of
/// input a last line without a line end counts as a line.
struct MetadataLineDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = MetadataLine

    let maximumLength: Int
    /// Octets already searched for a line end in the buffer's readable bytes.
    private var scanned = 0
    /// The octets of an over-long line thrown away so far; nil while reading a line normally.
    private var discarded: Int?

    init(maximumLength: Int) {
        self.maximumLength = maximumLength
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> MetadataLine? {
        let view = buffer.readableBytesView
        guard let newline = view.dropFirst(self.scanned).firstIndex(of: UInt8(ascii: "\n")) else {
            self.scanned = view.count
            if self.discarded != nil || view.count > self.maximumLength {
                // Too long already: throw away what is here and keep only the count.
                self.discarded = (self.discarded ?? 0) + view.count
                buffer.moveReaderIndex(forwardBy: view.count)
                self.scanned = 0
            }
            return nil
        }
        let length = newline - view.startIndex
        self.scanned = 0
        defer { buffer.moveReaderIndex(forwardBy: 1) }  // the line end
        if let discarded = self.discarded {
            self.discarded = nil
            buffer.moveReaderIndex(forwardBy: length)
            return .tooLong(octets: discarded + length)
        }
        var line = buffer.readSlice(length: length)!
        if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
        guard line.readableBytes <= self.maximumLength else { return .tooLong(octets: line.readableBytes) }
        if line.readableBytesView.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { return .blank }
        return .document(line)
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> MetadataLine? {
        if let line = try self.decode(buffer: &buffer) { return line }
        guard seenEOF else { return nil }
        if let discarded = self.discarded {
            self.discarded = nil
            return .tooLong(octets: discarded)
        }
        guard buffer.readableBytes > 0 else { return nil }
        buffer.writeInteger(UInt8(ascii: "\n"))  // the last line, unterminated
        return try self.decode(buffer: &buffer)
    }
}
