import Foundation
import Logging

/// A swift-log handler writing one JSON object per line (README "Logs and audit"): `time` (UTC,
/// ISO 8601 with milliseconds), `level`, `logger` (the label: `tether.edge`, `tether.audit`, …),
/// `message`, then every metadata key as a field of its own — a string, or an array or object
/// for nested metadata. Log shippers (Vector, Fluent Bit, Promtail) read it without a parser.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let sink: LogSink

    public init(label: String, sink: LogSink, level: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.sink = sink
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = self.metadata
        if let provided = self.metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let metadata = event.metadata { fields.merge(metadata) { $1 } }
        var line = "{\"time\":"
        Self.append(Self.timestamp(), to: &line)
        line += ",\"level\":"
        Self.append(event.level.rawValue, to: &line)
        line += ",\"logger\":"
        Self.append(self.label, to: &line)
        line += ",\"message\":"
        Self.append(event.message.description, to: &line)
        // Fixed fields first; a metadata key never replaces one.
        for key in fields.keys.sorted() where !["time", "level", "logger", "message"].contains(key) {
            line += ","
            Self.append(key, to: &line)
            line += ":"
            Self.append(fields[key]!, to: &line)
        }
        line += "}\n"
        self.sink.write(Array(line.utf8))
    }

    private static func append(_ value: Logger.Metadata.Value, to line: inout String) {
        switch value {
        case .string(let string): Self.append(string, to: &line)
        case .stringConvertible(let convertible): Self.append(convertible.description, to: &line)
        case .array(let values):
            line += "["
            for (index, value) in values.enumerated() {
                if index > 0 { line += "," }
                Self.append(value, to: &line)
            }
            line += "]"
        case .dictionary(let values):
            line += "{"
            for (index, key) in values.keys.sorted().enumerated() {
                if index > 0 { line += "," }
                Self.append(key, to: &line)
                line += ":"
                Self.append(values[key]!, to: &line)
            }
            line += "}"
        }
    }

    /// `string` as a JSON string (RFC 8259 §7).
    static func append(_ string: String, to line: inout String) {
        line += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": line += "\\\""
            case "\\": line += "\\\\"
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            case "\t": line += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                line += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: line.unicodeScalars.append(scalar)
            }
        }
        line += "\""
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &time)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(time.tm_year) + 1900, Int(time.tm_mon) + 1, Int(time.tm_mday),
            Int(time.tm_hour), Int(time.tm_min), Int(time.tm_sec), Int(now.tv_nsec / 1_000_000))
    }
}
