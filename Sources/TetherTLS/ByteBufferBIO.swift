import COpenSSL
import NIOCore

/// The BIO OpenSSL reads ciphertext from and writes ciphertext to: `ByteBuffer`s, one copy each
/// way and no intermediate memory BIO (spec §2.1). OpenSSL calls it synchronously from
/// `SSL_read`/`SSL_write`/`SSL_do_handshake`; it never blocks: an empty inbound queue means
/// "retry when more arrives".
final class ByteBufferBIO {
    /// The `BIO *` itself; the `SSL` that it is given to owns it.
    let bio: OpaquePointer
    private var inbound = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    /// Ciphertext OpenSSL wrote, waiting to be sent.
    var outbound: ByteBuffer
    private let allocator: ByteBufferAllocator

    init(allocator: ByteBufferAllocator) {
        self.allocator = allocator
        self.outbound = allocator.buffer(capacity: 0)
        self.bio = BIO_new(Self.method)!
        BIO_set_data(self.bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(self.bio, 1)
    }

    func append(_ ciphertext: ByteBuffer) {
        if ciphertext.readableBytes > 0 { self.inbound.append(ciphertext) }
    }

    var inboundBytes: Int { self.inbound.reduce(0) { $0 + $1.readableBytes } }

    /// The largest buffer ciphertext is gathered into (a power of two, as `ByteBuffer` allocates,
    /// and under glibc's mmap threshold): three full records.
    static let batchCapacity = 65_536

    /// The most one record adds to its plaintext on the wire: header, content type, AEAD tag, and
    /// OpenSSL's allowance for the rest (`SSL3_RT_MAX_ENCRYPTED_OVERHEAD`).
    static let recordOverhead = 256 + 5

    /// The ciphertext `plaintext` octets can become, at most.
    static func ciphertextLimit(plaintext: Int) -> Int {
        plaintext + (plaintext + TLSHandler.recordSize - 1) / TLSHandler.recordSize * Self.recordOverhead
    }

    /// Whether `plaintext` octets (one record at most) can be encrypted into the current batch
    /// without growing (copying) it.
    func hasRoom(plaintext: Int) -> Bool {
        self.outbound.readableBytes == 0 || self.outbound.writableBytes >= Self.ciphertextLimit(plaintext: plaintext)
    }

    /// Sizes an empty batch for `plaintext` octets about to be encrypted (up to a batch's worth),
    /// so that OpenSSL's writes never grow it.
    func reserve(plaintext: Int) {
        guard self.outbound.readableBytes == 0 else { return }
        let wanted = min(Self.ciphertextLimit(plaintext: plaintext), Self.batchCapacity)
        if self.outbound.writableBytes < wanted { self.outbound.reserveCapacity(minimumWritableBytes: wanted) }
    }

    /// Octets of ciphertext waiting to be taken.
    var outboundBytes: Int { self.outbound.readableBytes }

    /// Takes the ciphertext written so far.
    func takeOutbound() -> ByteBuffer? {
        guard self.outbound.readableBytes > 0 else { return nil }
        let bytes = self.outbound
        self.outbound = self.allocator.buffer(capacity: 0)
        return bytes
    }

    fileprivate func read(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int {
        var copied = 0
        while copied < count, var first = self.inbound.first {
            let length = min(count - copied, first.readableBytes)
            first.withUnsafeReadableBytes { bytes in
                UnsafeMutableRawPointer(destination + copied).copyMemory(from: bytes.baseAddress!, byteCount: length)
            }
            first.moveReaderIndex(forwardBy: length)
            copied += length
            if first.readableBytes == 0 {
                self.inbound.removeFirst()
            } else {
                self.inbound[self.inbound.startIndex] = first
            }
        }
        TLSStatistics.Counters.octetsCopied.wrappingAdd(copied, ordering: .relaxed)
        return copied
    }

    fileprivate func write(_ source: UnsafePointer<CChar>, count: Int) {
        if self.outbound.writableBytes < count {
            // Handshake messages and alerts; records have room reserved before they are encrypted.
            self.outbound.reserveCapacity(minimumWritableBytes: max(count, 4_096))
        }
        self.outbound.writeBytes(UnsafeRawBufferPointer(start: source, count: count))
        TLSStatistics.Counters.octetsCopied.wrappingAdd(count, ordering: .relaxed)
    }

    private static func owner(_ bio: OpaquePointer?) -> ByteBufferBIO {
        Unmanaged<ByteBufferBIO>.fromOpaque(BIO_get_data(bio)!).takeUnretainedValue()
    }

    /// One method table for the process. `nonisolated(unsafe)`: it is written once, here, and only
    /// read afterwards (OpenSSL reads BIO_METHODs without locking).
    nonisolated(unsafe) private static let method: OpaquePointer = {
        let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tether-bytebuffer")!
        BIO_meth_set_write(method) { bio, data, length in
            tether_BIO_clear_retry_flags(bio)
            guard let data, length > 0 else { return 0 }
            ByteBufferBIO.owner(bio).write(data, count: Int(length))
            return length
        }
        BIO_meth_set_read(method) { bio, data, length in
            tether_BIO_clear_retry_flags(bio)
            guard let data, length > 0 else { return 0 }
            let copied = ByteBufferBIO.owner(bio).read(into: data, count: Int(length))
            if copied == 0 {
                tether_BIO_set_retry_read(bio)
                return -1
            }
            return Int32(copied)
        }
        BIO_meth_set_ctrl(method) { bio, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: return 1
            case BIO_CTRL_PENDING: return Int(ByteBufferBIO.owner(bio).inboundBytes)
            case BIO_CTRL_WPENDING: return 0
            default: return 0
            }
        }
        BIO_meth_set_create(method) { _ in 1 }
        BIO_meth_set_destroy(method) { bio in
            BIO_set_data(bio, nil)
            return 1
        }
        return method
    }()
}
