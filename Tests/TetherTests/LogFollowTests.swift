import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import TetherRelay

/// A node's log file through the relays (spec/LOGS.md, README "Logs"): the edge serves it as a
/// LOGS stream, the hub's admin listener as NDJSON, asked with curl.
@Suite(.timeLimit(.minutes(3))) struct LogFollowTests {
    struct Follow {
        var lines: [String] = []
        var cursors: [String] = []
        var gaps: [String] = []
    }

    /// The NDJSON objects of a logs answer.
    static func parse(_ body: String) -> Follow {
        var follow = Follow()
        for line in body.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            if let cursor = object["cursor"] as? String { follow.cursors.append(cursor) }
            follow.lines += object["lines"] as? [String] ?? []
            if let gap = object["gap"] as? [String: Any] { follow.gaps.append(gap["reason"] as? String ?? "") }
        }
        return follow
    }

    /// A pair whose edge serves `sources`, with a policy that lets the plane follow each of
    /// `allowed` (names the edge may not serve among them).
    static func pair(serving sources: [EdgeConfiguration.LogSource], allowing allowed: [String]) async throws -> RelayPair {
        var pair = try await RelayPair(
            policy: "version: 1\nfromPlane:\n" + allowed.map { "  - {service: \($0), class: [logs], opaque: true}\n" }.joined())
        pair.edge.logs = sources
        return pair
    }

    @Test func aLogFileThroughTheRelaysWithCursorsAcrossARotation() async throws {
        let logs = try LogReaderTests.LogDirectory()
        let pair = try await Self.pair(
            serving: [.init(name: "kube", path: logs.log), .init(name: "pf9", path: logs.path + "/*.log")],
            allowing: ["kube", "nope", "pf9"])
        // A link in the glob's directory to a file outside it is never followed.
        let outside = logs.path + "-outside.log"
        try "outside\n".write(toFile: outside, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: logs.path + "/link.log", withDestinationPath: outside)
        try logs.write(100)
        try await pair.run { hub, edge in
            try await MetadataRelayTests.withAdmin(of: hub) { port, token in
                let path = "/v1/agents/demo/node-1/logs/kube"
                let all = try await RelayProcessTests.admin(port, path, token: token)
                #expect(all.status == 200, "\(all)")
                let first = Self.parse(all.body)
                #expect(first.lines == LogReaderTests.numbered(0..<100))
                let cursor = try #require(first.cursors.last)

                // From the cursor, across a rotation by renaming: each line once.
                try logs.write(50)
                try logs.rotate()
                try logs.write(20)
                let resumed = Self.parse(try await RelayProcessTests.admin(port, path + "?cursor=\(cursor)", token: token).body)
                #expect(resumed.lines == LogReaderTests.numbered(100..<170))
                #expect(resumed.gaps.isEmpty)

                // Following: a line written after the follow started arrives; when the client goes,
                // the hub resets the stream and the edge stops reading.
                let output = logs.path + "/follow.ndjson"
                FileManager.default.createFile(atPath: output, contents: nil)
                let curl = Process()
                curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
                curl.arguments = [
                    "-sS", "-N", "-H", "Authorization: Bearer \(token)",
                    "http://127.0.0.1:\(port)\(path)?follow=true&cursor=\(try #require(resumed.cursors.last))",
                ]
                curl.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
                try curl.run()
                try logs.write(3)
                var followed = Follow()
                for _ in 0..<600 where followed.lines.count < 3 {
                    try await Task.sleep(for: .milliseconds(50))
                    followed = Self.parse(try String(contentsOfFile: output, encoding: .utf8))
                }
                #expect(followed.lines == LogReaderTests.numbered(170..<173))
                let connection = try #require(edge.connection)
                #expect(try await connection.activeStreams()[.logs] == 1)
                try await RelayProcessTests.kill(curl)
                var open = 1
                for _ in 0..<600 where open > 0 {
                    try await Task.sleep(for: .milliseconds(50))
                    open = try await connection.activeStreams()[.logs]
                }
                #expect(open == 0, "the follow ended with its client")

                // A glob source: one matching file, named.
                let globbed = Self.parse(
                    try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/logs/pf9?file=kube.log", token: token).body)
                #expect(globbed.lines.first == "line 150" && globbed.lines.count == 23, "\(globbed.lines.prefix(3))")
                for file in ["link.log", "kube.log.1", "../tether-outside.log", ""] {
                    let refused = try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/logs/pf9?file=\(file)", token: token)
                    #expect(refused.status == 404, "\(file): \(refused)")
                }
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/logs/pf9", token: token).status == 404)

                // Refusals, each with its status: a source the edge does not serve, one the policy
                // does not allow (it decides first), a cursor that does not parse, an agent that is not there.
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/logs/nope", token: token).status == 404)
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-1/logs/secret", token: token).status == 403)
                #expect(try await RelayProcessTests.admin(port, path + "?cursor=nonsense", token: token).status == 400)
                #expect(try await RelayProcessTests.admin(port, "/v1/agents/demo/node-9/logs/kube", token: token).status == 404)
                #expect(try await RelayProcessTests.admin(port, path).status == 401)
            }
        }
    }

    /// A consumer that stops reading holds the follow where it is: the hub reads the stream only as
    /// fast as its client takes the body, so the edge sends at most a stream window (and what the
    /// sockets buffer) beyond — not the file. Once the consumer reads again, the follow goes on.
    @Test func aStalledConsumerHoldsTheEdgeToAWindow() async throws {
        let logs = try LogReaderTests.LogDirectory()
        let pair = try await Self.pair(serving: [.init(name: "kube", path: logs.log)], allowing: ["kube"])
        // 24 MiB of lines that compress poorly (random hex): about 13 MB on the wire in all.
        let lineCount = (24 << 20) / 65
        var bytes = [UInt8](repeating: UInt8(ascii: "\n"), count: lineCount * 65)
        let hex = Array("0123456789abcdef".utf8)
        var generator = SystemRandomNumberGenerator()
        for line in 0..<lineCount {
            for index in stride(from: 0, to: 64, by: 16) {
                var random = generator.next() as UInt64
                for digit in 0..<16 {
                    bytes[line * 65 + index + digit] = hex[Int(random & 15)]
                    random >>= 4
                }
            }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        try logs.append(text)
        try await pair.run { hub, edge in
            try await MetadataRelayTests.withAdmin(of: hub) { port, token in
                let connection = try #require(edge.connection)
                let reader = try await StalledReader.connect(
                    port: port, request: "GET /v1/agents/demo/node-1/logs/kube HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n\r\n")
                // Until the edge has sent nothing more for 2 s.
                var sent = -1
                var still = 0
                while still < 10 {
                    try await Task.sleep(for: .milliseconds(200))
                    let now = try await connection.counters().dataOctetsSentByClass[.logs]
                    still = now == sent ? still + 1 : 0
                    sent = now
                }
                // A stream window and what the sockets buffer, not the ~13 MB of the whole file.
                #expect(sent > 0 && sent < 8 << 20, "the edge sent \(sent) octets to a consumer that reads nothing")
                // Read again: the follow goes on from where it waited.
                try await reader.resume()
                var more = sent
                for _ in 0..<1_500 where more == sent {
                    try await Task.sleep(for: .milliseconds(20))
                    more = try await connection.counters().dataOctetsSentByClass[.logs]
                }
                #expect(more > sent, "the follow goes on once its consumer reads")
                try await reader.channel.close()
            }
        }
    }
}

extension String {
    func leftPadded(to count: Int) -> String { String(repeating: "0", count: max(0, count - self.count)) + self }
}

/// A client that sends its request and then reads nothing until told to: its socket's small
/// receive buffer fills, and everything behind it must wait. What it reads it drops.
struct StalledReader {
    let channel: any Channel

    static func connect(port: Int, request: String) async throws -> StalledReader {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_rcvbuf), value: 4_096)
            .channelOption(.autoRead, value: false)
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: request))
        return StalledReader(channel: channel)
    }

    /// Reads from now on.
    func resume() async throws {
        try await self.channel.setOption(.autoRead, value: true)
        self.channel.read()
    }
}
