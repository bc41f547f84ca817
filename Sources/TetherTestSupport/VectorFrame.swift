import NIOCore
import TetherWire

/// Builds a ``Frame`` from its JSON description in `spec/vectors/` (spec §13): the same field
/// names in frame vectors and session scripts.
public enum VectorFrame {
    public static func frame(_ fields: [String: Any]) throws -> Frame {
        let type = try fields.string("type")
        let stream = StreamID(UInt32(fields["stream"] as? Int ?? 0))
        let flagNames = fields["flags"] as? [String] ?? []
        switch type {
        case "DATA":
            var flags: DataFrame.Flags = []
            for name in flagNames {
                switch name {
                case "FIN": flags.insert(.fin)
                case "END_MSG": flags.insert(.endMessage)
                case "COMPRESSED": flags.insert(.compressed)
                case "RESET_CONTEXT": flags.insert(.resetContext)
                default: throw VectorError("unknown DATA flag \(name)")
                }
            }
            return .data(DataFrame(streamID: stream, flags: flags, payload: try payload(fields)))
        case "OPEN":
            let entries = try (fields["metadata"] as? [[String: Any]] ?? []).map { entry in
                let value =
                    if let hex = entry["value_hex"] as? String { try ByteBuffer(hex: hex) } else {
                        ByteBuffer(string: try entry.string("value"))
                    }
                return OpenMetadata.Entry(key: try entry.string("key"), value: value)
            }
            return .open(
                OpenFrame(
                    streamID: stream,
                    streamClass: try streamClass(fields.string("class")),
                    compression: CompressionAlgorithm(rawValue: UInt8(fields["compression"] as? Int ?? 0)),
                    service: try fields.string("service"),
                    metadata: OpenMetadata(entries)
                ))
        case "RESET":
            return .reset(
                ResetFrame(
                    streamID: stream, code: try errorCode(fields["code"]),
                    finalSize: UInt64(fields["final_size"] as? Int ?? 0)))
        case "CREDIT":
            if flagNames.contains("STREAMS") {
                return .credit(.streams(try streamClass(fields.string("class")), count: UInt32(try fields.int("count"))))
            }
            let limit = try uint64(fields["limit"])
            return .credit(stream.isConnection ? .connection(limit: limit) : .stream(stream, limit: limit))
        case "SETTINGS":
            if flagNames.contains("ACK") { return .settings(.ack) }
            let pairs = fields["settings"] as? [[Any]] ?? []
            return .settings(.values(try pairs.map(setting)))
        case "PING":
            // Scripts may leave `opaque` out of an expected PING to match any payload.
            var opaque = try ByteBuffer(hex: fields["opaque"] as? String ?? "0000000000000000")
            guard let value = opaque.readInteger(as: UInt64.self) else { throw VectorError("PING opaque is 8 octets") }
            return .ping(PingFrame(ack: flagNames.contains("ACK"), opaque: value))
        case "GOAWAY":
            return .goAway(
                GoAwayFrame(
                    lastStreamID: StreamID(UInt32(try fields.int("last_stream"))),
                    code: try errorCode(fields["code"]),
                    debug: fields["debug"] as? String ?? ""
                ))
        case "OPENED":
            return .opened(stream)
        default:
            guard type.hasPrefix("0x"), let raw = UInt8(type.dropFirst(2), radix: 16) else {
                throw VectorError("unknown frame type \(type)")
            }
            return .unknown(
                UnknownFrame(
                    type: FrameType(rawValue: raw), flags: UInt8(fields["flags"] as? Int ?? 0), streamID: stream,
                    payload: try ByteBuffer(hex: fields["payload"] as? String ?? "")))
        }
    }

    /// `payload` as hex, or `payload_repeat: [hex, count]`.
    public static func payload(_ fields: [String: Any]) throws -> ByteBuffer {
        if let pattern = fields["payload_repeat"] as? [Any] {
            guard pattern.count == 2, let hex = pattern[0] as? String, let count = pattern[1] as? Int else {
                throw VectorError("payload_repeat must be [hex, count]")
            }
            let unit = try ByteBuffer(hex: hex)
            var payload = ByteBuffer()
            for _ in 0..<count { payload.writeImmutableBuffer(unit) }
            return payload
        }
        return try ByteBuffer(hex: fields["payload"] as? String ?? "")
    }

    public static func streamClass(_ name: String) throws -> StreamClass {
        guard let value = StreamClass(name: name) else { throw VectorError("unknown class \(name)") }
        return value
    }

    /// A code given by name (`"CANCEL"`) or number.
    public static func errorCode(_ value: Any?) throws -> ErrorCode {
        if let number = value as? Int { return ErrorCode(rawValue: UInt32(number)) }
        guard let name = value as? String, let code = ErrorCode(name: name) else {
            throw VectorError("unknown error code \(String(describing: value))")
        }
        return code
    }

    /// A `[name or "0x…", value]` pair.
    public static func setting(_ pair: [Any]) throws -> Setting {
        guard pair.count == 2, let key = pair[0] as? String, let value = pair[1] as? Int else {
            throw VectorError("setting must be [name, value]: \(pair)")
        }
        let id: SettingID? =
            key.hasPrefix("0x") ? UInt16(key.dropFirst(2), radix: 16).map(SettingID.init(rawValue:)) : SettingID(name: key)
        guard let id else { throw VectorError("unknown setting \(key)") }
        return Setting(id, UInt32(value))
    }

    /// Settings from a `{"NAME": value}` object, applied over the defaults.
    public static func settings(_ object: [String: Any]?) throws -> Settings {
        var entries = Settings().entries
        for (name, value) in object ?? [:] {
            let entry = try setting([name, value])
            entries.removeAll { $0.id == entry.id }
            entries.append(entry)
        }
        return try Settings(validating: entries)
    }

    /// Every limit in the vectors fits `Int` (limits are at most 2⁶²−1, spec §5.4).
    private static func uint64(_ value: Any?) throws -> UInt64 {
        guard let number = value as? Int, number >= 0 else { throw VectorError("not a limit: \(String(describing: value))") }
        return UInt64(number)
    }
}
