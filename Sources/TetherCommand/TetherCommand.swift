import ArgumentParser
import CMalloc
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
