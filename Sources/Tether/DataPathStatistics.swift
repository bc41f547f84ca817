import Synchronization

/// What every Tether connection in this process has written so far, for `tether bench`'s copies
/// per octet (spec §2.1): DATA payload octets, and how many of them were copied next to their
/// frame header rather than handed to the transport as slices of what the application wrote.
/// Counted once per writing pass, never per octet.
public struct DataPathStatistics: Sendable, Equatable {
    public var dataOctetsWritten = 0
    public var dataOctetsCopied = 0

    public init() {}

    /// The counts since the process started.
    public static var process: DataPathStatistics {
        var statistics = DataPathStatistics()
        statistics.dataOctetsWritten = Counters.dataOctetsWritten.load(ordering: .relaxed)
        statistics.dataOctetsCopied = Counters.dataOctetsCopied.load(ordering: .relaxed)
        return statistics
    }

    enum Counters {
        static let dataOctetsWritten = Atomic<Int>(0)
        static let dataOctetsCopied = Atomic<Int>(0)
    }
}
