import Foundation
import Testing

/// Logs and audit (README "Logs and audit") on real `tether` processes: JSON lines on standard
/// error naming the relay's identity, and one audit record per stream in the audit file.
extension RelayProcessTests {
    /// The JSON objects of `path`'s lines; a line that is not one is recorded as an issue.
    static func jsonLines(_ path: String) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                Issue.record("not a JSON line in \(path): \(line)")
                return nil
            }
            return object
        }
    }

    /// Waits up to 30 s for an audit record of `path` with every field of `fields`.
    static func auditRecord(in path: String, _ fields: [String: String]) async throws -> [String: Any]? {
        for _ in 0..<300 {
            let records = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            if let record = records.first(where: { record in fields.allSatisfy { record[$0.key] as? String == $0.value } }) {
                return record
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("no audit record with \(fields) in \(path): \((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")")
        return nil
    }

    @Test func everyStreamIsAuditedInItsOwnSinkAndEveryLogLineNamesItsRelay() async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        try Self.edit(site, "hub.yaml") { $0 + "\naudit: {file: hub-audit.jsonl}" }
        try Self.edit(site, "edge.yaml") { $0 + "\naudit: {file: edge-audit.jsonl}" }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)
        let forwarded = try await Self.roundTrip(site.forward, octets: 300_000)
        #expect(forwarded?.count == 300_000)
        try await Self.waitUntilCarried(site.plane)
        let exposed = try await Self.roundTrip(site.plane, octets: 200_000)
        #expect(exposed?.count == 200_000)

        // The edge: who opened each stream, what, the octets each way, how long, how it ended.
        let edgeAudit = site.directory + "/edge-audit.jsonl"
        let forward = try await Self.auditRecord(
            in: edgeAudit, ["event": "stream", "service": "echo", "octets-sent": "300000", "octets-received": "300000"])
        #expect(forward?["result"] as? String == "ok")
        #expect((forward?["opened-by"] as? String)?.hasPrefix("local:") == true)
        #expect(forward?["identity"] as? String == "tether://demo/node-1" && forward?["agent"] as? String == "tether://demo/node-1")
        #expect(Int(forward?["stream"] as? String ?? "") != nil && Int(forward?["duration-ms"] as? String ?? "") != nil, "\(forward ?? [:])")
        let plane = try await Self.auditRecord(
            in: edgeAudit, ["event": "stream", "service": "local-echo", "octets-sent": "200000", "opened-by": "plane:listener:plane"])
        #expect(plane?["result"] as? String == "ok")
        // The hub: the same streams, by agent.
        let hubAudit = site.directory + "/hub-audit.jsonl"
        let fromAgent = try await Self.auditRecord(
            in: hubAudit,
            ["event": "stream", "service": "echo", "agent": "tether://demo/node-1", "opened-by": "agent", "octets-received": "300000"])
        #expect(fromAgent?["octets-sent"] as? String == "300000" && fromAgent?["result"] as? String == "ok", "\(fromAgent ?? [:])")
        _ = try await Self.auditRecord(
            in: hubAudit, ["event": "stream", "service": "local-echo", "opened-by": "listener:plane", "octets-sent": "200000"])

        // logrotate: the file is moved away, SIGHUP, and the next record starts a new one.
        try FileManager.default.moveItem(atPath: edgeAudit, toPath: edgeAudit + ".1")
        try await Self.hangUp(edge, site, role: "edge", until: "configuration reloaded")
        _ = try await Self.roundTrip(site.forward, octets: 1_234)
        _ = try await Self.auditRecord(in: edgeAudit, ["event": "stream", "service": "echo", "octets-sent": "1234"])
        try await Self.kill(edge)
        try await Self.kill(hub)
        try await echo.close()

        // Standard error: JSON lines, each naming the edge's identity or the hub's instance; no
        // audit record among them.
        let edgeLines = Self.jsonLines(site.directory + "/edge.log")
        #expect(!edgeLines.isEmpty)
        #expect(edgeLines.allSatisfy { $0["identity"] as? String == "tether://demo/node-1" && $0["logger"] as? String != "tether.audit" })
        let hubLines = Self.jsonLines(site.directory + "/hub.log")
        #expect(!hubLines.isEmpty)
        #expect(hubLines.allSatisfy { ($0["hub"] as? String)?.isEmpty == false && $0["logger"] as? String != "tether.audit" }, "\(hubLines)")
    }
}
