import Foundation
import NIOCore
import TetherWire

/// Reads the JSON files under `spec/vectors/` (spec §13).
public enum Vectors {
    /// `spec/vectors/` of this checkout.
    public static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("spec/vectors")

    public static func json(_ relativePath: String) throws -> [String: Any] {
        let data = try Data(contentsOf: self.directory.appendingPathComponent(relativePath))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw VectorError("\(relativePath) is not a JSON object")
        }
        return object
    }

    /// `frames.json`: name, bytes, and the frame those bytes are.
    public static func frames() throws -> [(name: String, bytes: ByteBuffer, frame: Frame)] {
        try self.json("frames.json").array("frames").map { entry in
            (try entry.string("name"), try entry.hex("hex"), try VectorFrame.frame(try entry.object("frame")))
        }
    }

    /// Every script of every file under `sessions/`, with its file name.
    public static func sessionScripts() throws -> [(file: String, script: [String: Any])] {
        let directory = self.directory.appendingPathComponent("sessions")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".json") }.sorted()
        return try files.flatMap { file in
            try self.json("sessions/" + file).array("scripts").map { (file, $0) }
        }
    }

    public struct Malformed: Sendable, CustomStringConvertible {
        public var name: String
        public var bytes: ByteBuffer
        /// An error code name, or `incomplete`.
        public var error: String
        public var reason: String?
        public var section: String?
        public var preface: Bool
        public var limits: FrameDecoder.Limits
        public var description: String { self.name }
    }

    /// `malformed.json`: bytes a decoder must reject.
    public static func malformed() throws -> [Malformed] {
        try self.json("malformed.json").array("malformed").map { entry in
            var limits = FrameDecoder.Limits()
            if let openSize = entry["max_open_size"] as? Int { limits.maxOpenSize = openSize }
            return Malformed(
                name: try entry.string("name"),
                bytes: try entry.hex("hex"),
                error: try entry.string("error"),
                reason: entry["reason"] as? String,
                section: entry["section"] as? String,
                preface: entry["preface"] as? Bool ?? false,
                limits: limits
            )
        }
    }
}

public struct VectorError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Dictionary where Key == String, Value == Any {
    public func string(_ key: String) throws -> String {
        guard let value = self[key] as? String else { throw VectorError("missing string \"\(key)\" in \(self)") }
        return value
    }

    public func int(_ key: String) throws -> Int {
        guard let value = self[key] as? Int else { throw VectorError("missing integer \"\(key)\" in \(self)") }
        return value
    }

    public func object(_ key: String) throws -> [String: Any] {
        guard let value = self[key] as? [String: Any] else { throw VectorError("missing object \"\(key)\"") }
        return value
    }

    public func array(_ key: String) throws -> [[String: Any]] {
        guard let value = self[key] as? [[String: Any]] else { throw VectorError("missing array \"\(key)\"") }
        return value
    }

    public func hex(_ key: String) throws -> ByteBuffer {
        try ByteBuffer(hex: self.string(key))
    }
}

extension ByteBuffer {
    /// Bytes from lower-case or upper-case hex, such as `"0a1b"`.
    public init(hex: String) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.utf8.count / 2)
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next() {
            guard let low = iterator.next(), let h = Self.nibble(high), let l = Self.nibble(low) else {
                throw VectorError("bad hex: \(hex.prefix(40))")
            }
            bytes.append(h << 4 | l)
        }
        self.init(bytes: bytes)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    public var hexString: String {
        self.readableBytesView.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: Swift.max(0, width - self.count)) + self
    }
}
