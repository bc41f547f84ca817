import Foundation
import Testing
import TetherTLS

/// The relays' admin endpoints (README "Admin endpoints") on real `tether` processes, asked with
/// curl; `/metrics` is read by the Prometheus project's own text parser (python3-prometheus-client).
extension RelayProcessTests {
    struct AdminAnswer {
        var status: Int
        var body: String
    }

    /// `GET path` on the admin listener at `port`, with `token` as a bearer token.
    static func admin(_ port: Int, _ path: String, token: String? = nil) async throws -> AdminAnswer {
        var arguments = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        let curl = try await Program.run(arguments + ["http://127.0.0.1:\(port)\(path)"])
        guard curl.status == 0, let last = curl.output.split(separator: "\n", omittingEmptySubsequences: false).last,
            let status = Int(last)
        else { return AdminAnswer(status: 0, body: curl.errors) }
        return AdminAnswer(status: status, body: String(curl.output.dropLast(last.count + 1)))
    }

    /// Asks until `accept` takes the answer, for up to 30 s (a gauge is set at scrape time, the
    /// traffic counters every 5 s); returns the last answer.
    static func admin(
        _ port: Int, _ path: String, token: String? = nil, until accept: (AdminAnswer) async throws -> Bool
    ) async throws -> AdminAnswer {
        var answer = AdminAnswer(status: 0, body: "")
        for _ in 0..<150 {
            answer = try await Self.admin(port, path, token: token)
            if try await accept(answer) { return answer }
            try await Task.sleep(for: .milliseconds(200))
        }
        return answer
    }

    struct Sample: Decodable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// The samples of a Prometheus text exposition, as `prometheus_client.parser` reads them; nil
    /// when it does not parse.
    static func samples(_ exposition: String) async throws -> [Sample]? {
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            samples = [{"name": s.name, "labels": s.labels, "value": s.value}
                       for family in text_string_to_metric_families(sys.stdin.read()) for s in family.samples]
            print(json.dumps(samples))
            """
        let parser = try await Program.run(["python3", "-c", script], input: exposition)
        guard parser.status == 0 else {
            Issue.record("the exposition does not parse: \(parser.errors)")
            return nil
        }
        return try JSONDecoder().decode([Sample].self, from: Data(parser.output.utf8))
    }

    static func value(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// Health, readiness, metrics and state on both relays; the hub's need the operator token.
    @Test func theAdminEndpointsOfBothRelays() async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let hubAdmin = try await Site.freePort()
        let edgeAdmin = try await Site.freePort()
        let token = Canary.secret("operator-token")
        let denied = site.directory + "/denied.sock"
        try Self.edit(site, "hub.yaml") {
            // A listener toward a target the edge's policy does not allow (a refusal to count).
            $0 + "\n  - {name: denied, listen: \"unix:\(denied)\", agent: tether://demo/node-1, target: ssh}"
                + "\nadmin: {listen: 127.0.0.1:\(hubAdmin), operators: [{id: ci, sha256: \(Self.hex(Digest.sha256(Array(token.utf8))))}]}"
        }
        try Self.edit(site, "edge.yaml") { $0 + "\nadmin: {listen: 127.0.0.1:\(edgeAdmin)}" }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        try await Self.waitUntilCarried(site.forward)
        let forwarded = try await Self.roundTrip(site.forward, octets: 1 << 20)
        #expect(forwarded?.count == 1 << 20)
        try await Self.waitUntilCarried(site.plane)

        // Liveness and readiness need no token, on either relay.
        #expect(try await Self.admin(edgeAdmin, "/healthz").status == 200)
        #expect(try await Self.admin(hubAdmin, "/healthz").status == 200)
        #expect(try await Self.admin(edgeAdmin, "/readyz").status == 200)
        #expect(try await Self.admin(hubAdmin, "/readyz").status == 200)

        // The hub's metrics and state: 401 without the token or with another; then the counts.
        for wrong in [nil, Canary.secret("not-the-token"), token + "x"] {
            let refused = try await Self.admin(hubAdmin, "/metrics", token: wrong)
            #expect(refused.status == 401, "\(refused)")
            #expect(try await Self.admin(hubAdmin, "/v1/state", token: wrong).status == 401)
        }
        var hubSamples: [Sample] = []
        let hubMetrics = try await Self.admin(hubAdmin, "/metrics", token: token) { answer in
            guard answer.status == 200, let samples = try await Self.samples(answer.body) else { return false }
            hubSamples = samples
            // The forwards' streams came in, the plane's went out, in the bulk class.
            return (Self.value(hubSamples, "tether_streams_opened_total", ["class": "bulk", "direction": "in"]) ?? 0) >= 2
                && (Self.value(hubSamples, "tether_stream_octets_total", ["class": "bulk", "direction": "in"]) ?? 0) >= Double(1 << 20)
                && (Self.value(hubSamples, "tether_streams_opened_total", ["class": "bulk", "direction": "out"]) ?? 0) >= 1
        }
        #expect(hubMetrics.status == 200)
        #expect(Self.value(hubSamples, "tether_streams_opened_total", ["class": "bulk", "direction": "in"]) ?? 0 >= 2, "\(hubMetrics.body)")
        #expect(Self.value(hubSamples, "tether_connected_edges") == 1)
        #expect((Self.value(hubSamples, "tether_certificate_expiry_seconds") ?? 0) > 86_400)
        // Bounded cardinality: no series on the hub names a tenant, an agent or an identity.
        let named = hubSamples.filter { sample in sample.labels.keys.contains { ["tenant", "agent", "identity"].contains($0) } }
        #expect(named.isEmpty, "\(named.map(\.name))")
        #expect(!hubMetrics.body.contains("node-1"))
        let hubState = try await Self.admin(hubAdmin, "/v1/state", token: token)
        #expect(hubState.status == 200)
        let hubJSON = try JSONSerialization.jsonObject(with: Data(hubState.body.utf8)) as? [String: Any]
        #expect(hubJSON?["connectedEdges"] as? Int == 1, "\(hubState.body)")
        #expect(hubJSON?["ready"] as? Bool == true)

        // The edge: no operator configured, on loopback — open to this machine.
        var edgeSamples: [Sample] = []
        let edgeMetrics = try await Self.admin(edgeAdmin, "/metrics") { answer in
            guard answer.status == 200, let samples = try await Self.samples(answer.body) else { return false }
            edgeSamples = samples
            return (Self.value(edgeSamples, "tether_stream_octets_total", ["class": "bulk", "direction": "out"]) ?? 0) >= Double(1 << 20)
                && (Self.value(edgeSamples, "tether_streams_opened_total", ["class": "bulk", "direction": "in"]) ?? 0) >= 1
        }
        #expect(edgeMetrics.status == 200)
        #expect(Self.value(edgeSamples, "tether_stream_octets_total", ["class": "bulk", "direction": "out"]) ?? 0 >= Double(1 << 20))
        #expect(Self.value(edgeSamples, "tether_hub_connected") == 1)
        // A refusal by the policy is counted with its rule and reason.
        _ = try await Self.roundTrip(denied, octets: 10)
        let refusals = try await Self.admin(edgeAdmin, "/metrics") { answer in
            guard let samples = try await Self.samples(answer.body) else { return false }
            return (Self.value(samples, "tether_policy_refused_streams_total", ["direction": "fromPlane"]) ?? 0) >= 1
        }
        #expect(refusals.body.contains("tether_policy_refused_streams_total{"), "\(refusals.body)")
        let edgeState = try await Self.admin(edgeAdmin, "/v1/state")
        let edgeJSON = try JSONSerialization.jsonObject(with: Data(edgeState.body.utf8)) as? [String: Any]
        let connection = edgeJSON?["connection"] as? [String: Any]
        #expect(connection?["state"] as? String == "connected", "\(edgeState.body)")
        #expect(connection?["hub"] as? String == "127.0.0.1:\(site.hubPort)")
        let bulk = (edgeJSON?["streams"] as? [String: Any])?["bulk"] as? [String: Any]
        #expect((bulk?["openedOut"] as? Int ?? 0) >= 2, "\(edgeState.body)")

        // SIGTERM: while a stream the plane opened keeps the hub draining, it is not ready.
        try await Self.holding(site.plane) { held in
            #expect(await held.exchange(1_000))
            Foundation.kill(hub.processIdentifier, SIGTERM)
            let draining = try await Self.admin(hubAdmin, "/readyz") { $0.status == 503 }
            #expect(draining.status == 503)
            #expect(draining.body.contains("draining"), "\(draining.body)")
            #expect(try await Self.admin(hubAdmin, "/healthz").status == 200)
        }
        // The hub goes away: the edge is no longer ready, says why, and counts the reconnect.
        try await Self.kill(hub)
        let unready = try await Self.admin(edgeAdmin, "/readyz") { $0.status == 503 }
        #expect(unready.status == 503)
        #expect(unready.body.contains("no connection to a hub"), "\(unready.body)")
        let down = try await Self.admin(edgeAdmin, "/metrics") { answer in
            guard let samples = try await Self.samples(answer.body) else { return false }
            return Self.value(samples, "tether_hub_connected") == 0 && samples.contains { $0.name == "tether_reconnects_total" }
        }
        #expect(down.body.contains("tether_reconnects_total{reason="), "\(down.body)")
        let lost = try await Self.admin(edgeAdmin, "/v1/state") { $0.body.contains("\"lastError\"") }
        #expect(lost.body.contains("\"lastError\""), "\(lost.body)")
        try await Self.kill(edge)
        try await echo.close()
    }
}
