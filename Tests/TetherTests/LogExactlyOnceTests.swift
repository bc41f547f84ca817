import Foundation
import TetherTLS
import Testing

/// spec/LOGS.md §4 on real processes: a consumer that follows a log written at 10,000 lines a
/// second and rotated every 5 seconds, through `tether edge` and `tether hub`, and resumes from
/// its last cursor whenever its follow breaks, gets every line exactly once — when the hub is
/// killed and started again in the middle, and when the edge is.
extension RelayProcessTests {
    /// A consumer of `GET …/logs/{source}?follow=true` with curl: whenever a follow ends, it starts
    /// another from the last cursor it got whole.
    final class LogConsumer: @unchecked Sendable {
        let url: String
        let token: String
        let directory: String
        private(set) var counts: [Int: Int] = [:]
        private(set) var cursor: String?
        private(set) var follows = 0
        private var curl: Process?
        private var output = ""
        private var parsed = 0

        init(url: String, token: String, directory: String) {
            self.url = url
            self.token = token
            self.directory = directory
        }

        var received: Int { self.counts.values.reduce(0, +) }

        /// Reads what the running follow wrote; starts a follow when none runs.
        func poll() throws {
            if let curl = self.curl {
                self.take(try String(contentsOfFile: self.output, encoding: .utf8))
                guard !curl.isRunning else { return }
                self.curl = nil
            }
            self.follows += 1
            self.output = self.directory + "/follow-\(self.follows).ndjson"
            self.parsed = 0
            FileManager.default.createFile(atPath: self.output, contents: nil)
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = [
                "-sS", "-N", "--fail", "-H", "Authorization: Bearer \(self.token)",
                self.url + "?follow=true" + (self.cursor.map { "&cursor=\($0)" } ?? ""),
            ]
            curl.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: self.output))
            curl.standardError = FileHandle.nullDevice
            try curl.run()
            self.curl = curl
        }

        /// Whole NDJSON lines only: a line cut by a failure carries nothing, its cursor included.
        private func take(_ text: String) {
            let whole = text.utf8.count - (text.utf8.reversed().firstIndex(of: UInt8(ascii: "\n")) ?? text.utf8.count)
            let new = text.utf8.dropFirst(self.parsed).prefix(whole - self.parsed)
            self.parsed = max(self.parsed, whole)
            for line in String(decoding: new, as: UTF8.self).split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
                for entry in object["lines"] as? [String] ?? [] {
                    if let number = Int(entry.prefix { $0 != " " }) { self.counts[number, default: 0] += 1 }
                }
                if object["gap"] != nil { self.counts[-1, default: 0] += 1 }
                if let cursor = object["cursor"] as? String { self.cursor = cursor }
            }
        }

        func stop() async throws {
            if let curl = self.curl { try await RelayProcessTests.kill(curl) }
        }
    }

    /// Runs the writer and a consumer through the site's relays, kills `victim` once the follow has
    /// carried a rotation's worth of lines, starts it again `down` later, and counts.
    func followThroughAKill(of victim: String, down: Duration) async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let admin = try await Site.freePort()
        let token = Canary.secret("operator-token")
        let logs = site.directory + "/logs"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        try Self.edit(site, "policy.yaml") { $0 + "\n  - {service: kube, class: [logs], opaque: true}\n" }
        try Self.edit(site, "edge.yaml") { $0 + "\nlogs:\n  - {name: kube, path: \(logs)/kube.log}\n" }
        try Self.edit(site, "hub.yaml") {
            $0 + "\nadmin: {listen: 127.0.0.1:\(admin), operators: [{id: ci, sha256: \(Self.hex(Digest.sha256(Array(token.utf8))))}]}\n"
        }
        FileManager.default.createFile(atPath: logs + "/kube.log", contents: nil)
        var hub = try site.start("hub")
        var edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)

        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("log-writer.py").path
        writer.arguments = [script, logs + "/kube.log", "10000", "16", "5"]
        let written = site.directory + "/written"
        FileManager.default.createFile(atPath: written, contents: nil)
        writer.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: written))
        try writer.run()

        let consumer = LogConsumer(
            url: "http://127.0.0.1:\(admin)/v1/agents/demo/node-1/logs/kube", token: token, directory: site.directory)
        var killed = false
        let deadline = ContinuousClock.now + .seconds(150)
        while ContinuousClock.now < deadline {
            try consumer.poll()
            // Killed in the middle: past the first rotation, while the writer still writes.
            if !killed && consumer.received > 55_000 {
                killed = true
                if victim == "hub" {
                    try await Self.kill(hub)
                    try await Task.sleep(for: down)
                    hub = try site.start("hub")
                } else {
                    try await Self.kill(edge)
                    try await Task.sleep(for: down)
                    edge = try site.start("edge")
                }
            }
            if !writer.isRunning, let total = Int(try String(contentsOfFile: written, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)),
                consumer.counts.count >= total
            {
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await consumer.stop()
        try await Self.kill(writer)
        let total = Int(try String(contentsOfFile: written, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(killed)
        #expect(total > 100_000, "the writer wrote \(total) lines")
        let lost = (0..<max(total, 0)).filter { consumer.counts[$0] == nil }
        let duplicated = consumer.counts.filter { $0.value > 1 }
        #expect(lost.isEmpty, "\(lost.count) lines lost, from \(lost.first ?? -1)")
        #expect(duplicated.isEmpty, "\(duplicated.count) lines more than once, e.g. \(duplicated.keys.sorted().prefix(5))")
        #expect(consumer.follows >= 2, "the follow broke and was resumed")
        for process in [edge, hub] { try await Self.kill(process) }
        try await echo.close()
    }

    @Test func aFollowResumedAfterTheHubIsKilledGetsEveryLineOnce() async throws {
        try await self.followThroughAKill(of: "hub", down: .milliseconds(500))
    }

    /// Down for 10.5 s from about 5.5 s into the writing: the file is rotated twice meanwhile (at
    /// 10 s and 15 s), and the cursor's file is `kube.log.2` when the edge comes back.
    @Test func aFollowResumedAfterTheEdgeWasDownAcrossTwoRotationsGetsEveryLineOnce() async throws {
        try await self.followThroughAKill(of: "edge", down: .milliseconds(10_500))
    }
}
