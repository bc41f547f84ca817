import Glibc
import Testing

@testable import TetherCommand

/// README "Fleet scale": memory a burst freed below live allocations goes back to the kernel.
@Suite struct MemoryReturnTests {
    /// 64 MiB in 64 KiB blocks, each followed by a small block that stays allocated: freed, the
    /// big blocks lie below live ones, where glibc's own trimming (the top of an arena) cannot
    /// reach, and their pages stay resident — until the relays' check trims the arenas. Pages are
    /// counted with mincore(2), so other tests' memory in this process does not count.
    @Test func memoryFreedBelowLiveAllocationsGoesBack() {
        let block = 64 << 10
        var big: [UnsafeMutableRawPointer] = []
        var small: [UnsafeMutableRawPointer] = []
        for _ in 0..<1_024 {
            let pointer = malloc(block)!
            memset(pointer, 0x5A, block)
            big.append(pointer)
            small.append(malloc(64)!)
        }
        defer { for pointer in small { free(pointer) } }
        let pages = big.map { Self.interiorPages(of: $0, length: block) }
        for pointer in big { free(pointer) }
        let residentAfterFree = pages.reduce(0) { $0 + Self.resident($1) }
        let total = pages.reduce(0) { $0 + $1.count }
        #expect(residentAfterFree * 4 > total * 3, "\(residentAfterFree) of \(total) pages resident after free")
        var trimmedAt = 0
        #expect(MemoryReturn().returnFreedMemory(trimmedAt: &trimmedAt))
        // What it trimmed counts as free still: the next look does not trim again.
        #expect(!MemoryReturn().returnFreedMemory(trimmedAt: &trimmedAt))
        let residentAfterTrim = pages.reduce(0) { $0 + Self.resident($1) }
        #expect(residentAfterTrim * 4 < total, "\(residentAfterTrim) of \(total) pages still resident after the trim")
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
