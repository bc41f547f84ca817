import Foundation
import TetherTLS
import TetherWire
import Testing

/// The plane's side of a running `tether hub` (README "Front door", "Agents API", "Status page"),
/// with the programs the plane runs: kubectl through the front door to a node's API server, curl
/// for the agents API, headless Chromium for the status page — two edges of two tenants.
extension RelayProcessTests {
    static let zone = "agents.test"

    /// A hub with a front door and an admin listener, an edge of `demo` exposing a node's HTTPS API
    /// server and an edge of `globex`; `body` gets the site, the front door's and the admin's ports.
    static func withPlane(
        _ body: (_ site: Site, _ frontDoor: Int, _ admin: Int, _ web: FrontDoorTests.NodeWebServer) async throws -> Void
    ) async throws {
        let echo = try await Self.echoServer()
        let site = try await Site(echoPort: echo.localAddress!.port!)
        let web = try await FrontDoorTests.NodeWebServer.start(in: site.directory, name: "api.node-1.demo.\(Self.zone)")
        let frontDoor = try await Site.freePort()
        let admin = try await Site.freePort()
        try site.certificates.issueEdge(TetherIdentity(tenant: "globex", agentID: "node-2")!, named: "edge-b")
        try Self.edit(site, "policy.yaml") { $0 + "\n  - {service: api, class: [bulk], opaque: true}\n" }
        try Self.edit(site, "edge.yaml") {
            $0 + "\n  - {name: api, target: 127.0.0.1:\(web.port)}\naudit: {file: \(site.directory)/edge-audit.jsonl}\n"
        }
        try """
        role: edge
        hubs: [127.0.0.1:\(site.hubPort)]
        tls: {certificate: edge-b.pem, key: edge-b.key, ca: ca.pem}
        policy: policy.yaml
        dial: {initialBackoff: 50ms, maxBackoff: 500ms}
        """.write(toFile: site.directory + "/edge-b.yaml", atomically: true, encoding: .utf8)
        try Self.edit(site, "hub.yaml") {
            $0 + """

                frontDoor:
                  listen: 127.0.0.1:\(frontDoor)
                  tls: {certificate: hub.pem, key: hub.key}
                  zone: \(Self.zone)
                  tokens:
                    - {id: ui, tenant: demo, user: alice@plane.example, sha256: \(Self.hex(Digest.sha256(Array(Self.alice.utf8))))}
                    - {id: other, tenant: globex, user: bob@plane.example, sha256: \(Self.hex(Digest.sha256(Array(Self.bob.utf8))))}
                admin: {listen: 127.0.0.1:\(admin), operators: [{id: ci, sha256: \(Self.hex(Digest.sha256(Array(Self.operatorToken.utf8))))}]}

                """
        }
        let hub = try site.start("hub")
        let edge = try site.start("edge")
        let edgeB = try site.start("edge", name: "edge-b")
        let ran: Result<Void, any Error>
        do {
            try await body(site, frontDoor, admin, web)
            ran = .success(())
        } catch {
            ran = .failure(error)
        }
        for process in [edgeB, edge, hub] { try await Self.kill(process) }
        try await web.stop()
        try await echo.close()
        site.certificates.remove()
        try ran.get()
    }

    static let alice = Canary.secret("alice-token")
    static let bob = Canary.secret("bob-token")
    static let operatorToken = Canary.secret("operator-token")

    /// The connected agents, as `token` may see them; waits until `accept` takes them.
    static func agents(
        _ admin: Int, token: String, until accept: ([[String: Any]]) -> Bool = { _ in true }
    ) async throws -> [[String: Any]] {
        var agents: [[String: Any]] = []
        _ = try await Self.admin(admin, "/v1/agents", token: token) { answer in
            guard answer.status == 200,
                let list = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["agents"] as? [[String: Any]]
            else { return false }
            agents = list
            return accept(list)
        }
        return agents
    }

    /// kubectl through the front door to the node's API server; curl; every refusal counted; the
    /// edge's audit names the plane user.
    @Test func kubectlAndCurlThroughTheFrontDoorOfARunningHub() async throws {
        try await Self.withPlane { site, frontDoor, admin, web in
            _ = try await Self.agents(admin, token: Self.operatorToken) { $0.count == 2 }
            let apiServer = "api.node-1.demo.\(Self.zone)"

            // kubectl: an https proxy-url with the token as Basic's password, and one CA bundle
            // that trusts the proxy (the hub's CA) and the API server (the node's) — no skipping.
            let bundle = site.directory + "/bundle.pem"
            try (try String(contentsOfFile: site.directory + "/ca.pem", encoding: .utf8) + String(contentsOfFile: web.ca, encoding: .utf8))
                .write(toFile: bundle, atomically: true, encoding: .utf8)
            let kubeconfig = site.directory + "/kubeconfig"
            try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: node-1
              cluster:
                server: https://\(apiServer)
                certificate-authority: \(bundle)
                proxy-url: https://alice:\(Self.alice)@127.0.0.1:\(frontDoor)
            users:
            - name: plane
              user: {token: for-the-api-server}
            contexts:
            - name: node-1
              context: {cluster: node-1, user: plane}
            current-context: node-1
            """.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
            let kubectl = try await Program.run([
                "HOME=\(site.directory)", "timeout", "60", "kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/api",
            ])
            #expect(kubectl.status == 0, "\(kubectl.errors)")
            let versions = try? JSONSerialization.jsonObject(with: Data(kubectl.output.utf8)) as? [String: Any]
            #expect(versions?["kind"] as? String == "APIVersions", "\(kubectl.output) \(kubectl.errors)")

            // curl, and the refusals the counters count.
            let ca = site.directory + "/ca.pem"
            let page = try await FrontDoorTests.curl(frontDoor: frontDoor, ca: ca, host: apiServer, webCA: web.ca, basic: "alice:\(Self.alice)")
            #expect(page.connect == 200 && page.body == "node web server: /\n", "\(page)")
            let wrong = try await FrontDoorTests.curl(frontDoor: frontDoor, ca: ca, host: apiServer, webCA: web.ca, basic: "alice:x")
            #expect(wrong.connect == 407)
            let foreign = try await FrontDoorTests.curl(
                frontDoor: frontDoor, ca: ca, host: apiServer, webCA: web.ca, basic: "bob:\(Self.bob)")
            #expect(foreign.connect == 404)
            let denied = try await FrontDoorTests.curl(
                frontDoor: frontDoor, ca: ca, host: "ssh.node-1.demo.\(Self.zone)", webCA: web.ca, basic: "alice:\(Self.alice)")
            #expect(denied.connect == 403)
            var samples: [Sample] = []
            _ = try await Self.admin(admin, "/metrics", token: Self.operatorToken) { answer in
                samples = try await Self.samples(answer.body) ?? []
                return (Self.value(samples, "tether_front_door_connects_total", ["status": "200"]) ?? 0) >= 2
            }
            let spliced = Self.value(samples, "tether_front_door_connects_total", ["status": "200"]) ?? 0
            for status in ["407", "404", "403"] {
                #expect(Self.value(samples, "tether_front_door_connects_total", ["status": status]) == 1, "\(status)")
            }

            // The edge audits who touched the node — the token's plane user, never the token: one
            // record for each stream the front door spliced (kubectl's and curl's), when it ends.
            var audit = ""
            var byAlice: [[String: Any]] = []
            for _ in 0..<300 where byAlice.count < Int(spliced) {
                try await Task.sleep(for: .milliseconds(100))
                audit = try String(contentsOfFile: site.directory + "/edge-audit.jsonl", encoding: .utf8)
                byAlice = audit.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                    .filter { $0["opened-by"] as? String == "plane:alice@plane.example" && $0["service"] as? String == "api" }
            }
            #expect(spliced >= 2 && byAlice.count == Int(spliced), "\(spliced) \(audit)")
            #expect(!audit.contains(Self.alice))
        }
    }

    /// The agents API (operator: every tenant; a front door token: its own tenant, and another
    /// tenant's agent is the same 404 as none) and the status page in headless Chromium.
    @Test func theAgentsAPIAndTheStatusPageOfARunningHub() async throws {
        try await Self.withPlane { site, frontDoor, admin, web in
            _ = try await Self.agents(admin, token: Self.operatorToken) { $0.count == 2 }
            let ca = site.directory + "/ca.pem"
            let api = "api.node-1.demo.\(Self.zone)"
            let upload = site.directory + "/upload.bin"
            FileManager.default.createFile(atPath: upload, contents: Data(repeating: 0x5A, count: 8 << 20))
            let sent = try await FrontDoorTests.curl(
                frontDoor: frontDoor, ca: ca, host: api, path: "/upload", webCA: web.ca, basic: "alice:\(Self.alice)",
                extra: ["--upload-file", upload])
            #expect(sent.connect == 200 && sent.status == 200, "\(sent)")
            // A refusal by the node's policy: node-1's last error.
            let denied = try await FrontDoorTests.curl(
                frontDoor: frontDoor, ca: ca, host: "ssh.node-1.demo.\(Self.zone)", webCA: web.ca, basic: "alice:\(Self.alice)")
            #expect(denied.connect == 403)

            // The operator sees both tenants' agents, with the traffic sampled.
            let all = try await Self.agents(admin, token: Self.operatorToken) { agents in
                agents.count == 2 && agents.first { $0["agent"] as? String == "node-1" }?["throughputToAgent"] != nil
            }
            #expect(all.map { "\($0["tenant"] ?? "")/\($0["agent"] ?? "")" } == ["demo/node-1", "globex/node-2"], "\(all)")
            let node1 = try #require(all.first)
            #expect(node1["edgeVersion"] as? String == TetherRelease.version)
            #expect(node1["protocolVersion"] as? Int == 1)
            #expect((node1["address"] as? String)?.hasPrefix("127.0.0.1:") == true, "\(node1)")
            #expect(node1["connectedSince"] is String && node1["certificateNotAfter"] is String && node1["hubInstance"] is String)
            #expect((node1["octetsToAgent"] as? Int ?? 0) >= 8 << 20, "\(node1)")
            let bulk = (node1["streams"] as? [String: Any])?["bulk"] as? [String: Any]
            #expect((bulk?["openedOut"] as? Int ?? 0) >= 2, "\(node1)")
            let lastError = (node1["lastError"] as? [String: Any])?["error"] as? String
            #expect(lastError?.contains("POLICY_DENIED") == true, "\(node1)")
            #expect(lastError?.contains("alice@plane.example") == true)

            // A tenant's token: its own agents only.
            let alices = try await Self.agents(admin, token: Self.alice)
            #expect(alices.map { $0["agent"] as? String } == ["node-1"])
            let bobs = try await Self.agents(admin, token: Self.bob)
            #expect(bobs.map { $0["agent"] as? String } == ["node-2"])
            let foreign = try await Self.admin(admin, "/v1/agents/globex/node-2", token: Self.alice)
            let unknown = try await Self.admin(admin, "/v1/agents/demo/node-9", token: Self.alice)
            #expect(foreign.status == 404 && unknown.status == 404)
            #expect(foreign.body == unknown.body)
            let asOperator = try await Self.admin(admin, "/v1/agents/globex/node-2", token: Self.operatorToken)
            #expect(asOperator.status == 200 && asOperator.body.contains("\"node-2\""), "\(asOperator)")
            let own = try await Self.admin(admin, "/v1/agents/demo/node-1", token: Self.alice)
            #expect(own.status == 200 && own.body.contains("\"node-1\""))
            // Nothing else for a tenant's token; nothing at all without a token.
            for path in ["/", "/metrics", "/v1/state"] {
                #expect(try await Self.admin(admin, path, token: Self.alice).status == 401, "\(path)")
            }
            #expect(try await Self.admin(admin, "/v1/agents").status == 401)
            #expect(try await Self.admin(admin, "/").status == 401)

            // The status page in a real browser, with the operator's token as Basic's password —
            // what a browser's own prompt sends.
            let screenshot = ProcessInfo.processInfo.environment["TETHER_SCREENSHOT"] ?? site.directory + "/status.png"
            let url = "http://operator:\(Self.operatorToken)@127.0.0.1:\(admin)/"
            let dom = try await Self.chromium(["--dump-dom", url], in: site.directory)
            #expect(dom.contains("<table"), "\(dom)")
            #expect(dom.contains(">node-1<") && dom.contains(">node-2<") && dom.contains(">globex<"), "\(dom)")
            #expect(dom.contains("POLICY_DENIED"))
            #expect(!dom.contains("<script"))
            // The screenshot with a stream open: a request the node's server holds until a second one comes.
            let held = Task {
                try await FrontDoorTests.curl(
                    frontDoor: frontDoor, ca: ca, host: api, path: "/together/2", webCA: web.ca, basic: "alice:\(Self.alice)")
            }
            _ = try await Self.agents(admin, token: Self.operatorToken) { agents in
                ((agents.first?["streams"] as? [String: Any])?["bulk"] as? [String: Any])?["open"] as? Int == 1
            }
            _ = try await Self.chromium(["--screenshot=\(screenshot)", "--window-size=1400,300", url], in: site.directory)
            let release = try await FrontDoorTests.curl(
                frontDoor: frontDoor, ca: ca, host: api, path: "/together/2", webCA: web.ca, basic: "alice:\(Self.alice)")
            #expect(release.body == "together 2\n")
            #expect(try await held.value.body == "together 2\n")
            let png = try #require(FileManager.default.contents(atPath: screenshot))
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 10_000, "\(png.count) octets")
        }
    }

    /// Headless Chromium (Debian's) with a profile of its own under `directory`; its standard output.
    static func chromium(_ arguments: [String], in directory: String) async throws -> String {
        let chromium = try await Program.run(
            [
                "HOME=\(directory)", "timeout", "120", "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=\(directory)/chromium",
            ] + arguments)
        if chromium.status != 0 { Issue.record("chromium exited \(chromium.status): \(chromium.errors.suffix(2_000))") }
        return chromium.output
    }
}
