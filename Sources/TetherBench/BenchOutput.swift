import Foundation

/// Where a bench's figures go: lines for a reader, or — with `--json` — one JSON object per
/// figure on standard output (read by `Benchmarks/report.py`) and the lines on standard error.
struct BenchOutput: Sendable {
    let json: Bool

    /// A line for a reader.
    func say(_ line: String) {
        if self.json {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        } else {
            print(line)
        }
    }

    /// A figure, with `--json`.
    func record(_ value: some Encodable) {
        guard self.json else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try! encoder.encode(value), as: UTF8.self))
    }
}
