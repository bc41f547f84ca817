import Synchronization

/// What every TLS connection in this process has done so far: records and plaintext each way, and
/// the octets copied between buffers on the way (spec §2.1). For `tether bench`'s per-MiB figures
/// and for metrics; each count is a relaxed atomic add per record or per BIO call, never per octet.
///
/// Copies counted: ciphertext into OpenSSL's read buffer and out of its write buffer (the BIO),
/// plaintext packed into a record from writes smaller than one, and OpenSSL's own two — each
/// plaintext octet written is copied into its write buffer and encrypted there, each record
/// decrypted in its read buffer is copied out to the caller (OpenSSL 3.0's record layer). The
/// encryption and decryption themselves are not counted. Raw TLS therefore makes four copies per
/// octet in user space; nothing below OpenSSL's `SSL_write`/`SSL_read` API can make fewer.
public struct TLSStatistics: Sendable, Equatable {
    /// Records written, and the plaintext they carried.
    public var recordsWritten = 0
    public var plaintextOctetsWritten = 0
    /// Records read (each `SSL_read` returns one record's plaintext at most), and their plaintext.
    public var recordsRead = 0
    public var plaintextOctetsRead = 0
    /// Octets copied in user space, as counted above.
    public var octetsCopied = 0

    public init() {}

    /// The counts since the process started.
    public static var process: TLSStatistics {
        var statistics = TLSStatistics()
        statistics.recordsWritten = Counters.recordsWritten.load(ordering: .relaxed)
        statistics.plaintextOctetsWritten = Counters.plaintextOctetsWritten.load(ordering: .relaxed)
        statistics.recordsRead = Counters.recordsRead.load(ordering: .relaxed)
        statistics.plaintextOctetsRead = Counters.plaintextOctetsRead.load(ordering: .relaxed)
        statistics.octetsCopied = Counters.octetsCopied.load(ordering: .relaxed)
        return statistics
    }

    enum Counters {
        static let recordsWritten = Atomic<Int>(0)
        static let plaintextOctetsWritten = Atomic<Int>(0)
        static let recordsRead = Atomic<Int>(0)
        static let plaintextOctetsRead = Atomic<Int>(0)
        static let octetsCopied = Atomic<Int>(0)
    }
}
