import Foundation
import Testing

/// The performance report's tools (README "Performance") at a small size: `Benchmarks/peers.sh`
/// starts a private sshd with an `ssh -L` forward and a stunnel pair, `tether bench` measures the
/// relays and both of them to the same sink, the script stops what it started; `report.py` turns
/// the JSON into the table and the pictures. The figures themselves come from
/// `Benchmarks/report.sh`.
@Suite struct PerformanceReportTests {
    struct Row: Decodable {
        var scenario: String
        var streams: Int
        var mib_per_s: Double
        var quantiles_us: [[Double]]?
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test(.timeLimit(.minutes(3))) func peersAndRelaysAreMeasuredToOneSinkAndTheReportIsDrawn() async throws {
        let tether = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("tether").path
        let bench = try await Program.run([
            Self.repository.appendingPathComponent("Benchmarks/peers.sh").path, tether, "bench", "--json",
            "--only", "raw,relays,peers,latency", "--streams", "1,2", "--bytes", "8M", "--seconds", "1",
        ])
        #expect(bench.status == 0, "\(bench.errors)")
        // Every process the script started is gone, and so is its directory.
        let left = try await Program.run(["pgrep", "-f", "tether-peers\\."])
        #expect(left.output.isEmpty, "still running: \(left.output)")

        let rows = try bench.output.split(separator: "\n").map { try JSONDecoder().decode(Row.self, from: Data($0.utf8)) }
        for scenario in ["relays-processes", "peer-ssh-L", "peer-stunnel"] {
            #expect(rows.filter { $0.scenario == scenario }.map(\.streams) == [1, 2], "\(scenario): \(rows)")
        }
        #expect(rows.allSatisfy { $0.mib_per_s > 0 || $0.scenario.hasPrefix("command-rtt-idle") }, "\(rows)")
        for scenario in ["command-rtt-idle-tls", "command-rtt-under-bulk-tls"] {
            let quantiles = rows.first { $0.scenario == scenario }?.quantiles_us ?? []
            #expect(quantiles.first?[0] == 0 && quantiles.last?[0] == 100, "\(scenario)")
            #expect(zip(quantiles, quantiles.dropFirst()).allSatisfy { $0[1] <= $1[1] }, "\(scenario) is not a distribution")
        }

        // The table and the pictures from that run.
        let run = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: run) }
        try bench.output.write(to: run.appendingPathComponent("loopback.jsonl"), atomically: true, encoding: .utf8)
        try #"{"date": "today", "commit": "test", "cpus": 2, "cpu": "any", "memory": "1 GiB", "kernel": "6", "openssl": "OpenSSL 3", "ssh": "OpenSSH", "stunnel": "stunnel 5"}"#
            .write(to: run.appendingPathComponent("machine.json"), atomically: true, encoding: .utf8)
        let out = run.appendingPathComponent("out")
        let report = try await Program.run(["python3", Self.repository.appendingPathComponent("Benchmarks/report.py").path, run.path, out.path])
        #expect(report.status == 0, "\(report.errors)")
        #expect(report.output.contains("| relay path, 1 connection(s) |"), "\(report.output)")
        #expect(report.output.contains("≥ 1.0× stunnel"), "\(report.output)")
        for picture in ["throughput.svg", "command-rtt.svg"] {
            let svg = try String(contentsOf: out.appendingPathComponent(picture), encoding: .utf8)
            #expect(svg.contains("<svg") && svg.contains("<path"), "\(picture)")
        }
    }
}
