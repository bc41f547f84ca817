import ArgumentParser
import CMalloc
import ServiceLifecycle
import TetherBench
import TetherWire

#if canImport(Glibc)
import Glibc
#endif

@main
struct TetherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tether",
        abstract: "Many logical channels over one outbound connection.",
        version: TetherRelease.version,
        subcommands: [Edge.self, Hub.self, CheckConfig.self, Demo.self, BenchCommand.self, Certs.self, Token.self]
    )

    static func main() async {
        MallocTuning.apply()
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// glibc gives the top of an arena back to the kernel whenever more than 128 KiB of it is free
/// (`M_TRIM_THRESHOLD`), and faults fresh pages in when it grows again. A tunnel at full speed
/// frees and allocates 16–64 KiB record and read buffers continuously, so with the default a fifth
/// of its CPU went to page faults and `madvise` (`perf` on `tether bench --only memory`); with
/// 8 MiB the same rows ran 1.3–2× faster, raw TLS and the tunnel alike (README "Benchmarks").
/// Bursts larger than that still go back to the system. The environment's `MALLOC_TRIM_THRESHOLD_`
/// wins when it is set. Libraries leave this to the executable that links them.
enum MallocTuning {
    static let trimThreshold: Int32 = 8 << 20

    static func apply() {
        guard getenv("MALLOC_TRIM_THRESHOLD_") == nil else { return }
        _ = tether_set_malloc_trim_threshold(trimThreshold)
    }
}

/// glibc gives back only the top of an arena, and only past `M_TRIM_THRESHOLD`: what a burst
/// freed below live allocations stays resident. After 40 connections' full windows closed, a hub
/// stayed at 3.3× its resident memory before them until it was trimmed; `malloc_trim(0)` also
/// returns free pages inside arenas (README "Fleet scale"). So the relays look every 5 s, and
/// when the free space in malloc's arenas grew by more than 4 MiB since the last trim, trim
/// them. Trimmed pages still count as free, so the growth — not the free space — is the trigger:
/// a hub whose arenas stay fragmented is not trimmed again and again.
struct MemoryReturn: Service {
    var interval: Duration = .seconds(5)
    var threshold = 4 << 20

    func run() async throws {
        var trimmedAt = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            self.returnFreedMemory(trimmedAt: &trimmedAt)
        }
    }

    /// Trims malloc's arenas when their free space grew by more than `threshold` since
    /// `trimmedAt` (the free space after the last trim, lowered as memory is reused); returns
    /// whether it did.
    @discardableResult
    func returnFreedMemory(trimmedAt: inout Int) -> Bool {
        let free = Int(tether_malloc_free_bytes())
        trimmedAt = min(trimmedAt, free)
        guard free > trimmedAt + self.threshold else { return false }
        _ = tether_malloc_trim()
        trimmedAt = Int(tether_malloc_free_bytes())
        return true
    }
}
