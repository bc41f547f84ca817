import Foundation
import NIOCore
import TetherWire
import Yams

/// A configuration error, where it is: the file, the line and column of the offending key or
/// value (Yams' node marks), the dotted path of the key, and what is wrong.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int?
    public var column: Int?
    public var path: String
    public var message: String

    public var description: String {
        var text = self.file
        if let line = self.line, let column = self.column { text += ":\(line):\(column)" }
        if !self.path.isEmpty { text += ": \(self.path)" }
        return text + ": " + self.message
    }
}

extension ConfigError {
    /// The text of a configuration file; a file that cannot be read is an error naming it.
    static func readText(of path: String) throws(ConfigError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, line: nil, column: nil, path: "", message: "cannot read: \(error.localizedDescription)")
        }
    }
}

/// One YAML value with where it came from, read strictly: a mapping rejects keys it does not
/// know, every accessor names the key and its position when the value is wrong.
struct ConfigNode {
    let node: Node
    let path: String
    let file: String

    /// Parses `text`; a YAML syntax error carries its line and column.
    static func parse(_ text: String, file: String) throws(ConfigError) -> ConfigNode {
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(file: file, line: 1, column: 1, path: "", message: "the file is empty")
            }
            return ConfigNode(node: node, path: "", file: file)
        } catch let error as ConfigError {
            throw error
        } catch let YamlError.scanner(_, problem, mark, _), let YamlError.parser(_, problem, mark, _),
            let YamlError.composer(_, problem, mark, _)
        {
            throw ConfigError(file: file, line: mark.line, column: mark.column, path: "", message: "YAML: \(problem)")
        } catch {
            throw ConfigError(file: file, line: nil, column: nil, path: "", message: "YAML: \(error)")
        }
    }

    func error(_ message: String) -> ConfigError {
        ConfigError(file: self.file, line: self.node.mark?.line, column: self.node.mark?.column, path: self.path, message: message)
    }

    /// The keys of a mapping, each allowed; an unknown key is an error at that key.
    func mapping(_ allowed: Set<String>) throws(ConfigError) -> ConfigMapping {
        guard case .mapping(let mapping) = self.node else { throw self.error("expected a mapping of keys") }
        var values: [String: ConfigNode] = [:]
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else { throw self.error("a key must be a plain string") }
            let keyPath = self.path.isEmpty ? scalar.string : "\(self.path).\(scalar.string)"
            guard allowed.contains(scalar.string) else {
                let known = allowed.sorted().joined(separator: ", ")
                throw ConfigError(
                    file: self.file, line: key.mark?.line, column: key.mark?.column, path: keyPath,
                    message: "unknown key (known here: \(known))")
            }
            values[scalar.string] = ConfigNode(node: value, path: keyPath, file: self.file)
        }
        return ConfigMapping(node: self, values: values)
    }

    func sequence() throws(ConfigError) -> [ConfigNode] {
        guard case .sequence(let sequence) = self.node else { throw self.error("expected a list") }
        return sequence.enumerated().map { ConfigNode(node: $1, path: "\(self.path)[\($0)]", file: self.file) }
    }

    func string() throws(ConfigError) -> String {
        guard case .scalar(let scalar) = self.node, !scalar.string.isEmpty else { throw self.error("expected a non-empty string") }
        return scalar.string
    }

    func int(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let value = Int(try self.string()), range.contains(value) else {
            throw self.error("expected a whole number in \(range.lowerBound)…\(range.upperBound)")
        }
        return value
    }

    func bool() throws(ConfigError) -> Bool {
        switch try self.string() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw self.error("expected true or false")
        }
    }

    /// `250ms`, `30s`, `5m`, `1h`.
    func duration(in range: ClosedRange<TimeAmount> = .nanoseconds(0)...TimeAmount.hours(24)) throws(ConfigError) -> TimeAmount {
        let text = try self.string()
        let units: [(String, Double)] = [("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3_600e9)]
        for (suffix, nanoseconds) in units where text.hasSuffix(suffix) {
            if let number = Double(text.dropLast(suffix.count)), number >= 0 {
                let amount = TimeAmount.nanoseconds(Int64(number * nanoseconds))
                guard range.contains(amount) else { break }
                return amount
            }
        }
        throw self.error("expected a duration such as 250ms, 30s or 5m, within \(range.lowerBound)…\(range.upperBound)")
    }

    /// `512`, `64KiB`, `1MiB`, `2GiB` (octets).
    func size(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        let text = try self.string()
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("", 1)]
        for (suffix, unit) in units where text.hasSuffix(suffix) {
            if let number = Int(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)),
                case let (octets, overflow) = number.multipliedReportingOverflow(by: unit), !overflow, range.contains(octets)
            {
                return octets
            }
            break
        }
        throw self.error("expected a size such as 512KiB or 1MiB, within \(range.lowerBound)…\(range.upperBound) octets")
    }

    func streamClass() throws(ConfigError) -> StreamClass {
        guard let value = StreamClass(name: try self.string()) else {
            throw self.error("expected a stream class: command, metadata, logs or bulk")
        }
        return value
    }

    func endpoint() throws(ConfigError) -> Endpoint {
        do {
            return try Endpoint(try self.string())
        } catch let error as EndpointError {
            throw self.error(error.description)
        } catch {
            throw self.error("\(error)")
        }
    }

    /// A path to a file that exists (it is read at start and on reload); a relative path is
    /// relative to the configuration file's directory, wherever the daemon was started.
    func existingFile() throws(ConfigError) -> String {
        var path = try self.string()
        if !path.hasPrefix("/") {
            path = URL(fileURLWithPath: self.file).deletingLastPathComponent().appendingPathComponent(path).path
        }
        guard FileManager.default.isReadableFile(atPath: path) else { throw self.error("cannot read \(path)") }
        return path
    }
}

/// A mapping's values by key.
struct ConfigMapping {
    let node: ConfigNode
    let values: [String: ConfigNode]

    subscript(key: String) -> ConfigNode? { self.values[key] }

    func required(_ key: String) throws(ConfigError) -> ConfigNode {
        guard let value = self.values[key] else {
            throw self.node.error("missing key \"\(key)\"")
        }
        return value
    }
}

/// Where to listen or connect: `host:port` (a name, an IPv4 address, or an IPv6 address in
/// brackets) or `unix:/path`.
public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public init(_ text: String) throws(EndpointError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard path.hasPrefix("/") else { throw EndpointError("a Unix socket needs an absolute path: unix:/run/…") }
            self = .unix(path: path)
            return
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[close...].hasPrefix("]:") else {
                throw EndpointError("an IPv6 address goes in brackets: [::1]:443")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw EndpointError("expected host:port, [IPv6]:port or unix:/path, got \(text)")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (1...65_535).contains(port) else {
            throw EndpointError("expected host:port with a port in 1…65535, got \(text)")
        }
        self = .tcp(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

public struct EndpointError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
