import NIOCore

extension ByteBuffer {
    /// Writes the connection preface (spec §3.1): the magic, then SETTINGS without ACK.
    @discardableResult
    public mutating func writePreface(_ settings: Settings) -> Int {
        self.writeBytes(Preface.magic) + self.writeFrame(.settings(.values(settings.entries)))
    }

    /// Encodes one frame (spec §5): header, then payload. Returns the octets written.
    ///
    /// A DATA payload is copied here; writers that want to avoid the copy write
    /// ``writeFrameHeader(_:)`` and hand the payload buffer to the transport separately.
    @discardableResult
    public mutating func writeFrame(_ frame: Frame) -> Int {
        switch frame {
        case .data(let data):
            var payload = data.payload
            let header = FrameHeader(
                length: payload.readableBytes, type: .data, flags: data.flags.rawValue, streamID: data.streamID)
            return self.writeFrameHeader(header) + self.writeBuffer(&payload)
        case .open(let open):
            return self.writeFrame(type: .open, flags: 0, streamID: open.streamID) { $0.writeOpenPayload(open) }
        case .reset(let reset):
            self.writeFrameHeader(FrameHeader(length: 12, type: .reset, flags: 0, streamID: reset.streamID))
            return FrameHeader.size + self.writeMultipleIntegers(reset.code.rawValue, reset.finalSize)
        case .credit(.stream(let stream, let limit)):
            self.writeFrameHeader(FrameHeader(length: 8, type: .credit, flags: 0, streamID: stream))
            return FrameHeader.size + self.writeInteger(limit)
        case .credit(.connection(let limit)):
            self.writeFrameHeader(FrameHeader(length: 8, type: .credit, flags: 0, streamID: .connection))
            return FrameHeader.size + self.writeInteger(limit)
        case .credit(.streams(let streamClass, let count)):
            self.writeFrameHeader(
                FrameHeader(length: 5, type: .credit, flags: CreditFlags.streams, streamID: .connection))
            return FrameHeader.size + self.writeMultipleIntegers(streamClass.rawValue, count)
        case .settings(.ack):
            return self.writeFrameHeader(
                FrameHeader(length: 0, type: .settings, flags: FlagBits.ack, streamID: .connection))
        case .settings(.values(let entries)):
            self.writeFrameHeader(
                FrameHeader(length: entries.count * 6, type: .settings, flags: 0, streamID: .connection))
            for entry in entries { self.writeMultipleIntegers(entry.id.rawValue, entry.value) }
            return FrameHeader.size + entries.count * 6
        case .ping(let ping):
            self.writeFrameHeader(
                FrameHeader(length: 8, type: .ping, flags: ping.ack ? FlagBits.ack : 0, streamID: .connection))
            return FrameHeader.size + self.writeInteger(ping.opaque)
        case .goAway(let goAway):
            return self.writeFrame(type: .goAway, flags: 0, streamID: .connection) {
                $0.writeMultipleIntegers(goAway.lastStreamID.rawValue, goAway.code.rawValue)
                    + $0.writeString(goAway.debug)
            }
        case .opened(let stream):
            return self.writeFrameHeader(FrameHeader(length: 0, type: .opened, flags: 0, streamID: stream))
        case .unknown(let unknown):
            var payload = unknown.payload
            let header = FrameHeader(
                length: payload.readableBytes, type: unknown.type, flags: unknown.flags, streamID: unknown.streamID)
            return self.writeFrameHeader(header) + self.writeBuffer(&payload)
        }
    }

    /// Writes a header with a placeholder length, the payload, then patches the 24-bit length.
    private mutating func writeFrame(
        type: FrameType,
        flags: UInt8,
        streamID: StreamID,
        payload: (inout ByteBuffer) -> Int
    ) -> Int {
        let start = self.writerIndex
        self.writeFrameHeader(FrameHeader(length: 0, type: type, flags: flags, streamID: streamID))
        let length = payload(&self)
        precondition(length <= 0xFF_FFFF, "frame payload must fit 24 bits")
        self.setInteger(UInt16(truncatingIfNeeded: length >> 8), at: start)
        self.setInteger(UInt8(truncatingIfNeeded: length), at: start + 2)
        return FrameHeader.size + length
    }

    /// OPEN payload (spec §5.2). The caller guarantees the field lengths; see ``OpenFrame/validate()``.
    private mutating func writeOpenPayload(_ open: OpenFrame) -> Int {
        let service = open.service.utf8
        precondition((1...255).contains(service.count), "service must be 1–255 octets (spec §5.2)")
        var written = self.writeMultipleIntegers(open.streamClass.rawValue, open.compression.rawValue, UInt8(service.count))
        written += self.writeBytes(service)
        for entry in open.metadata.entries {
            let key = entry.key.utf8
            var value = entry.value
            precondition((1...64).contains(key.count), "metadata key must be 1–64 octets (spec §5.2)")
            precondition(value.readableBytes <= 0xFFFF, "metadata value must be at most 65,535 octets (spec §5.2)")
            written += self.writeInteger(UInt8(key.count))
            written += self.writeBytes(key)
            written += self.writeInteger(UInt16(value.readableBytes))
            written += self.writeBuffer(&value)
        }
        return written
    }
}

/// Flag bits shared by several types.
enum FlagBits {
    /// ACK on SETTINGS and PING (spec §5.5, §5.6).
    static let ack: UInt8 = 0x1
}

/// Flag bits of CREDIT (spec §5.4).
enum CreditFlags {
    static let streams: UInt8 = 0x1
}
