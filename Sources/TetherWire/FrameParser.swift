import NIOCore

/// Turns a header and its complete payload into a typed ``Frame`` (spec §4.3, §5), or names the
/// rule the bytes break.
enum FrameParser {
    static func parse(_ header: FrameHeader, _ payload: ByteBuffer, limits: FrameDecoder.Limits) throws(WireError)
        -> Frame
    {
        var payload = payload
        switch header.type {
        case .data:
            try requireStream(header)
            let flags = DataFrame.Flags(rawValue: header.flags).intersection(.defined)
            if flags.contains(.compressed) && payload.readableBytes == 0 {
                throw WireError(.emptyCompressedData, "COMPRESSED DATA on stream \(header.streamID) has no payload")
            }
            if flags.contains(.resetContext) && !flags.contains(.compressed) {
                throw WireError(.resetWithoutCompression, "RESET_CONTEXT without COMPRESSED on stream \(header.streamID)")
            }
            return .data(DataFrame(streamID: header.streamID, flags: flags, payload: payload))
        case .open:
            try requireStream(header)
            guard header.length <= limits.maxOpenSize else {
                throw WireError(.openTooLarge, "OPEN of \(header.length) octets exceeds MAX_OPEN_SIZE \(limits.maxOpenSize)")
            }
            return .open(try parseOpen(header.streamID, &payload))
        case .reset:
            try requireStream(header)
            try requireLength(header, 12)
            let (code, finalSize) = payload.readMultipleIntegers(as: (UInt32, UInt64).self)!
            return .reset(ResetFrame(streamID: header.streamID, code: ErrorCode(rawValue: code), finalSize: finalSize))
        case .credit:
            return .credit(try parseCredit(header, &payload))
        case .settings:
            try requireConnection(header)
            if header.flags & FlagBits.ack != 0 {
                try requireLength(header, 0)
                return .settings(.ack)
            }
            guard header.length % 6 == 0 else {
                throw WireError(.badPayloadSize, "SETTINGS payload of \(header.length) octets is not a multiple of 6")
            }
            var entries: [Setting] = []
            entries.reserveCapacity(header.length / 6)
            while let (id, value) = payload.readMultipleIntegers(as: (UInt16, UInt32).self) {
                entries.append(Setting(SettingID(rawValue: id), value))
            }
            _ = try Settings(validating: entries)
            return .settings(.values(entries))
        case .ping:
            try requireConnection(header)
            try requireLength(header, 8)
            return .ping(PingFrame(ack: header.flags & FlagBits.ack != 0, opaque: payload.readInteger()!))
        case .goAway:
            try requireConnection(header)
            guard header.length >= 8 else {
                throw WireError(.badPayloadSize, "GOAWAY payload of \(header.length) octets is shorter than 8")
            }
            guard header.length - 8 <= GoAwayFrame.maxDebugLength else {
                throw WireError(.debugTooLong, "GOAWAY debug text of \(header.length - 8) octets exceeds 256")
            }
            let (last, code) = payload.readMultipleIntegers(as: (UInt32, UInt32).self)!
            guard let debug = String(validating: payload.readableBytesView, as: UTF8.self) else {
                throw WireError(.debugNotUTF8, "GOAWAY debug text is not UTF-8")
            }
            return .goAway(GoAwayFrame(lastStreamID: StreamID(last), code: ErrorCode(rawValue: code), debug: debug))
        case .opened:
            try requireStream(header)
            try requireLength(header, 0)
            return .opened(header.streamID)
        default:
            return .unknown(
                UnknownFrame(type: header.type, flags: header.flags, streamID: header.streamID, payload: payload))
        }
    }

    private static func parseCredit(_ header: FrameHeader, _ payload: inout ByteBuffer) throws(WireError) -> CreditFrame {
        if header.flags & CreditFlags.streams != 0 {
            try requireConnection(header)
            try requireLength(header, 5)
            let (rawClass, count) = payload.readMultipleIntegers(as: (UInt8, UInt32).self)!
            guard let streamClass = StreamClass(rawValue: rawClass) else {
                throw WireError(.invalidCreditClass, "STREAMS CREDIT names class \(rawClass)")
            }
            return .streams(streamClass, count: count)
        }
        try requireLength(header, 8)
        let limit: UInt64 = payload.readInteger()!
        guard limit <= CreditFrame.maxLimit else {
            throw WireError(.creditTooLarge, "CREDIT limit \(limit) exceeds 2^62-1")
        }
        return header.streamID.isConnection ? .connection(limit: limit) : .stream(header.streamID, limit: limit)
    }

    /// OPEN payload (spec §5.2): class, compression, service, then metadata entries to the end.
    private static func parseOpen(_ stream: StreamID, _ payload: inout ByteBuffer) throws(WireError) -> OpenFrame {
        guard let (rawClass, compression, serviceLength) = payload.readMultipleIntegers(as: (UInt8, UInt8, UInt8).self)
        else {
            throw WireError(.openTruncated, "OPEN payload ends before its service name")
        }
        guard let streamClass = StreamClass(rawValue: rawClass) else {
            throw WireError(.invalidClass, "OPEN names class \(rawClass)")
        }
        guard let serviceBytes = payload.readSlice(length: Int(serviceLength)) else {
            throw WireError(.openTruncated, "OPEN payload ends inside its service name")
        }
        guard OpenFrame.isValidService(serviceBytes.readableBytesView) else {
            throw WireError(.invalidService, "service name must be 1–255 octets of [A-Za-z0-9._:/@+-]")
        }
        var entries: [OpenMetadata.Entry] = []
        while payload.readableBytes > 0 {
            guard let keyLength = payload.readInteger(as: UInt8.self),
                let key = payload.readSlice(length: Int(keyLength)),
                let valueLength = payload.readInteger(as: UInt16.self),
                let value = payload.readSlice(length: Int(valueLength))
            else {
                throw WireError(.openTruncated, "OPEN payload ends inside metadata entry \(entries.count + 1)")
            }
            guard OpenFrame.isValidMetadataKey(key.readableBytesView) else {
                throw WireError(.invalidMetadataKey, "metadata key must be 1–64 octets of [a-z0-9._-]")
            }
            let keyString = String(buffer: key)
            guard !entries.contains(where: { $0.key == keyString }) else {
                throw WireError(.duplicateMetadataKey, "metadata key \"\(keyString)\" appears twice")
            }
            entries.append(OpenMetadata.Entry(key: keyString, value: value))
        }
        return OpenFrame(
            streamID: stream,
            streamClass: streamClass,
            compression: CompressionAlgorithm(rawValue: compression),
            service: String(buffer: serviceBytes),
            metadata: OpenMetadata(entries)
        )
    }

    private static func requireStream(_ header: FrameHeader) throws(WireError) {
        guard !header.streamID.isConnection else {
            throw WireError(.wrongStream, "frame type \(header.type.rawValue) must not use stream 0")
        }
    }

    private static func requireConnection(_ header: FrameHeader) throws(WireError) {
        guard header.streamID.isConnection else {
            throw WireError(.wrongStream, "frame type \(header.type.rawValue) must use stream 0, not \(header.streamID)")
        }
    }

    private static func requireLength(_ header: FrameHeader, _ length: Int) throws(WireError) {
        guard header.length == length else {
            throw WireError(
                .badPayloadSize, "frame type \(header.type.rawValue) needs a \(length)-octet payload, got \(header.length)")
        }
    }
}
