/// The priority class of a stream, carried in OPEN (spec §5.2, §8.1).
///
/// CONTROL (class 0) is a scheduling class for connection frames only; no stream has it.
public enum StreamClass: UInt8, Sendable, Hashable, CaseIterable {
    case command = 1
    case metadata = 2
    case logs = 3
    case bulk = 4

    /// The spec's name (`COMMAND`).
    public var name: String {
        switch self {
        case .command: "COMMAND"
        case .metadata: "METADATA"
        case .logs: "LOGS"
        case .bulk: "BULK"
        }
    }

    public init?(name: String) {
        guard let value = Self.allCases.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = value
    }

    /// Dense index 0…3, for per-class tables.
    @inlinable
    public var index: Int { Int(self.rawValue) - 1 }
}

/// One value per stream class (spec §3.3 `INITIAL_STREAMS_*`, §7.3, §8.2).
public struct PerClass<Value> {
    @usableFromInline
    var values: [Value]

    public init(_ value: Value) {
        self.values = Array(repeating: value, count: StreamClass.allCases.count)
    }

    public init(command: Value, metadata: Value, logs: Value, bulk: Value) {
        self.values = [command, metadata, logs, bulk]
    }

    @inlinable
    public subscript(streamClass: StreamClass) -> Value {
        get { self.values[streamClass.index] }
        // In place: a get-then-set would copy a stored collection on every change.
        _modify { yield &self.values[streamClass.index] }
    }
}

extension PerClass: Sendable where Value: Sendable {}
extension PerClass: Equatable where Value: Equatable {}
extension PerClass: Hashable where Value: Hashable {}

/// A compression algorithm id (spec §9.1).
public struct CompressionAlgorithm: Hashable, Sendable, RawRepresentable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let none = CompressionAlgorithm(rawValue: 0)
    /// Raw DEFLATE with context takeover and a sync flush per frame (spec §9.3).
    public static let deflate = CompressionAlgorithm(rawValue: 1)

    public var name: String {
        switch self.rawValue {
        case 0: "none"
        case 1: "deflate"
        default: "algorithm-\(self.rawValue)"
        }
    }
}

/// The algorithms an endpoint can decompress: the `COMPRESSION` setting's bit mask (spec §3.3, §9.1).
public struct CompressionSet: Hashable, Sendable, RawRepresentable {
    public var rawValue: UInt32

    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    public init(_ algorithms: [CompressionAlgorithm]) {
        self.rawValue = 0
        for algorithm in algorithms { self.insert(algorithm) }
    }

    public static let empty = CompressionSet(rawValue: 0)

    /// Algorithm 0 (none) is always available; ids 1…32 map to bits 0…31.
    public func contains(_ algorithm: CompressionAlgorithm) -> Bool {
        if algorithm == .none { return true }
        guard algorithm.rawValue <= 32 else { return false }
        return self.rawValue & (1 << (UInt32(algorithm.rawValue) - 1)) != 0
    }

    public mutating func insert(_ algorithm: CompressionAlgorithm) {
        guard algorithm != .none, algorithm.rawValue <= 32 else { return }
        self.rawValue |= 1 << (UInt32(algorithm.rawValue) - 1)
    }
}
