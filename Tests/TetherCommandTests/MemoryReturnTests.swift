import Glibc
import Testing

@testable import TetherCommand

/// README "Fleet scale": memory a burst freed below live allocations goes back to the kernel.
@Suite struct MemoryReturnTests {
    /// 64 MiB freed in 64 KiB pieces, each between two live blocks, where glibc's own trimming
    /// (the top of an arena) cannot reach: their pages stay resident — until the relays' check
    /// trims the arenas. Pages are counted with mincore(2), so other tests' memory in this process
    /// does not count.
    @Test func memoryFreedBelowLiveAllocationsGoesBack() {
        // Other tests run in this process at the same time, and a trim of theirs (or their
        // allocations reusing the freed blocks) can disturb one round: a round counts only when
        // the freed pages were still resident before the check ran.
        for _ in 0..<5 {
            guard let (residentBefore, residentAfter, total) = Self.round() else { continue }
            #expect(residentBefore * 4 > total * 3)
            #expect(residentAfter * 4 < total, "\(residentAfter) of \(total) pages still resident after the trim")
            return
        }
        Issue.record("in five rounds the freed pages were never found resident before the trim")
    }

    /// Frees 64 MiB below live blocks, checks, and trims; nil when the pages were not resident
    /// after the free. Returns the resident pages before and after the check, and the pages.
    /// The blocks are allocated one after the other with a 128-octet head each, then shrunk to
    /// their heads by `realloc`, which frees each tail in place: every freed tail lies between two
    /// live heads (small blocks allocated apart could come from anywhere, and the tails would join
    /// at the arena's top).
    static func round() -> (before: Int, after: Int, total: Int)? {
        let block = 64 << 10
        let head = 128
        var heads: [UnsafeMutableRawPointer] = []
        var pages: [(start: UnsafeMutableRawPointer, count: Int)] = []
        let blocks = (0..<1_024).map { _ in malloc(head + block)! }  // one after the other
        for pointer in blocks {
            memset(pointer, 0x5A, head + block)
            let kept = realloc(pointer, head)!
            heads.append(kept)
            if kept == pointer { pages.append(Self.interiorPages(of: pointer + head, length: block)) }
        }
        defer { for pointer in heads { free(pointer) } }
        let total = pages.reduce(0) { $0 + $1.count }
        let before = pages.reduce(0) { $0 + Self.resident($1) }
        guard total > 0, before * 4 > total * 3 else { return nil }
        var trimmedAt = 0
        #expect(MemoryReturn().returnFreedMemory(trimmedAt: &trimmedAt))
        // What it trimmed counts as free still: the next look does not trim again.
        #expect(!MemoryReturn().returnFreedMemory(trimmedAt: &trimmedAt))
        return (before, pages.reduce(0) { $0 + Self.resident($1) }, total)
    }

    /// The whole pages inside a block, past malloc's chunk header.
    static func interiorPages(of pointer: UnsafeMutableRawPointer, length: Int) -> (start: UnsafeMutableRawPointer, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: pointer) + 2 * page - 1) / page * page  // a page in, clear of the header
        let end = (Int(bitPattern: pointer) + length - page) / page * page
        return (UnsafeMutableRawPointer(bitPattern: start)!, max(0, (end - start) / page))
    }

    static func resident(_ pages: (start: UnsafeMutableRawPointer, count: Int)) -> Int {
        guard pages.count > 0 else { return 0 }
        var vector = [UInt8](repeating: 0, count: pages.count)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard mincore(pages.start, pages.count * page, &vector) == 0 else { return 0 }
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }
}
