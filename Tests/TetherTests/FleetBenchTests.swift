import Foundation
import Testing

/// `tether bench fleet` (README "Fleet scale") end to end at a small size: a real `tether hub`
/// process, real edges with their own certificates, every one through a keepalive, the hub killed
/// and started again, every edge back. The figures at 10,000 edges come from the README's command.
@Suite struct FleetBenchTests {
    struct Report: Decodable {
        var edges: Int
        var hub_kib_per_edge: Double
        var handshakes_per_second: Double
        var storm_edges_not_back: Int?
        var storm_rate_per_second: [Int]?
    }

    @Test(.timeLimit(.minutes(3))) func aSmallFleetConnectsIdlesAndComesBackAfterTheHubIsKilled() async throws {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let process = Process()
        process.executableURL = me.deletingLastPathComponent().appendingPathComponent("tether")
        process.arguments = ["bench", "fleet", "--edges", "40", "--idle-seconds", "1", "--ping-seconds", "1", "--json"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let data = try output.fileHandleForReading.readToEnd() ?? Data()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let report = try JSONDecoder().decode(Report.self, from: data)
        #expect(report.edges == 40)
        #expect(report.hub_kib_per_edge > 0 && report.handshakes_per_second > 0, "\(report)")
        #expect(report.storm_edges_not_back == 0, "\(report)")
        #expect(report.storm_rate_per_second?.reduce(0, +) == 40, "\(report)")
    }
}
