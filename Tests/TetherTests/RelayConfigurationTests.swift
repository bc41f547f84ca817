import Foundation
import TetherPolicy
import TetherRelay
import TetherWire
import Testing

/// The relays' configuration files (README "Configuration"): strict YAML, errors with file, line,
/// column and key; the edge's forwards and exposes cross-checked against the customer's policy.
@Suite struct RelayConfigurationTests {
    /// A directory with the files a configuration names.
    struct Directory {
        let path: String

        init() throws {
            self.path = NSTemporaryDirectory() + "tether-config-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true)
            for name in ["edge.pem", "edge.key", "hub.pem", "hub.key", "ca.pem", "ca2.pem"] {
                try self.write(name, "placeholder")
            }
            try self.write(
                "policy.yaml",
                """
                version: 1
                toPlane:
                  - service: kube-api
                    class: [bulk]
                    opaque: true
                  - service: inventory
                    class: metadata
                    fields: [node.name]
                fromPlane:
                  - service: node-exporter
                    class: [bulk]
                    opaque: true
                """)
        }

        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: self.path + "/" + name, atomically: true, encoding: .utf8)
        }

        /// Writes `text` as a configuration and loads it as the daemon would.
        func load(_ text: String) throws(ConfigError) -> RelayConfigurationFile {
            try? self.write("relay.yaml", text)
            return try RelayConfigurationFile.load(path: self.path + "/relay.yaml")
        }

        /// The error `text` is refused with, or nil — and an issue — when it is accepted.
        func refusal(of text: String, sourceLocation: SourceLocation = #_sourceLocation) -> ConfigError? {
            do {
                _ = try self.load(text)
                Issue.record("accepted: \(text)", sourceLocation: sourceLocation)
                return nil
            } catch {
                return error
            }
        }

        func remove() { try? FileManager.default.removeItem(atPath: self.path) }
    }

    static let edge = """
        role: edge
        hubs: [hub.example.com:443, 192.0.2.7:443, "[2001:db8::7]:443"]
        tls:
          certificate: edge.pem
          key: edge.key
          ca: [ca.pem, ca2.pem]
        policy: policy.yaml
        dial:
          initialBackoff: 100ms
          maxBackoff: 10s
          keepalive: 15s
        forwards:
          - name: api
            listen: 127.0.0.1:16443
            service: kube-api
          - name: api-unix
            listen: unix:/run/tether/api.sock
            service: kube-api
            class: bulk
        exposes:
          - name: node-exporter
            target: unix:/run/node-exporter.sock
        metadata:
          - name: agents
            listen: unix:/run/tether/metadata.sock
            service: inventory
            maxLine: 65536
        drain:
          grace: 45s
        """

    @Test func anEdgeConfigurationReadsEveryKey() throws {
        let directory = try Directory()
        defer { directory.remove() }
        guard case .edge(let edge) = try directory.load(Self.edge) else {
            Issue.record("not read as an edge")
            return
        }
        #expect(edge.hubs == [.tcp(host: "hub.example.com", port: 443), .tcp(host: "192.0.2.7", port: 443), .tcp(host: "2001:db8::7", port: 443)])
        // Relative paths are relative to the configuration file, not to where the daemon started.
        #expect(edge.tls.trustedCAs == [directory.path + "/ca.pem", directory.path + "/ca2.pem"])
        #expect(edge.policy == directory.path + "/policy.yaml")
        #expect(edge.dial.initial == .milliseconds(100) && edge.dial.maximum == .seconds(10))
        #expect(edge.dial.keepalive == .seconds(15) && edge.dial.resetAfter == .seconds(60))
        #expect(edge.forwards.map(\.listen) == [.tcp(host: "127.0.0.1", port: 16443), .unix(path: "/run/tether/api.sock")])
        #expect(edge.forwards.allSatisfy { $0.streamClass == .bulk && $0.service == "kube-api" })
        #expect(edge.exposes.map(\.target) == [.unix(path: "/run/node-exporter.sock")])
        #expect(edge.metadata.map(\.listen) == [.unix(path: "/run/tether/metadata.sock")])
        #expect(edge.metadata.map(\.maxLine) == [65_536] && edge.metadata.map(\.service) == ["inventory"])
        #expect(edge.drainGrace == .seconds(45))
        let policy = try PolicyFile.load(path: edge.policy)
        #expect(edge.problems(against: policy).isEmpty)
    }

    @Test func theEdgesDialingKeysAreRead() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let text = Self.edge.replacingOccurrences(
            of: "  keepalive: 15s", with: "  keepalive: 15s\n  userTimeout: 20s\n  permanentFailureBackoff: 5m\n  waitForHub: 3s")
        guard case .edge(let edge) = try directory.load(text) else {
            Issue.record("not read as an edge")
            return
        }
        #expect(edge.dial.userTimeout == .seconds(20))
        #expect(edge.dial.permanentFailureBackoff == .minutes(5))
        #expect(edge.dial.waitForHub == .seconds(3))
    }

    /// The revocation list: identities, comments and blank lines; anything else names its line.
    @Test func aRevocationListIsReadAndAMistakeNamesItsLine() throws {
        let list = try RevocationList.parse("# revoked 2026-11-30\ntether://acme/node-9\n\n  tether://acme/node-7  # lost\n", file: "r")
        #expect(list.identities == [TetherIdentity(tenant: "acme", agentID: "node-9")!, TetherIdentity(tenant: "acme", agentID: "node-7")!])
        #expect(throws: ConfigError.self) { try RevocationList.parse("tether://acme/node-9\nacme/node-8\n", file: "r") }
        do {
            _ = try RevocationList.parse("tether://acme/node-9\nacme/node-8\n", file: "r")
        } catch {
            #expect(error.line == 2)
            #expect(error.description.contains("acme/node-8"))
        }
    }

    @Test func aHubConfigurationReadsEveryKey() throws {
        let directory = try Directory()
        defer { directory.remove() }
        try directory.write("revoked.txt", "tether://acme/node-9\n")
        let loaded = try directory.load(
            """
            role: hub
            listen: "[::]:443"
            tls: {certificate: hub.pem, key: hub.key, ca: ca.pem}
            revoked: revoked.txt
            limits: {connectionsPerIdentity: 3, handshakesPerSecond: 200, windowMemoryPerIdentity: 16MiB}
            drain: {grace: 10s, redialWindow: 2s}
            services:
              - {name: kube-api, backend: 127.0.0.1:6443, tenants: [acme, globex]}
              - {name: metrics, backend: unix:/run/metrics.sock, tenants: ["*"], proxyProtocol: false}
            listeners:
              - {name: exporter, listen: 127.0.0.1:19100, agent: tether://acme/node-1, target: node-exporter}
            """)
        guard case .hub(let hub) = loaded else {
            Issue.record("not read as a hub")
            return
        }
        #expect(hub.listen == .tcp(host: "::", port: 443))
        #expect(hub.revoked == directory.path + "/revoked.txt")
        #expect(hub.limits.connectionsPerIdentity == 3 && hub.limits.handshakesPerSecond == 200)
        #expect(hub.limits.windowMemoryPerIdentity == 16 << 20)
        #expect(hub.drain.grace == .seconds(10) && hub.drain.redialWindow == .seconds(2))
        #expect(hub.services[0].allows("globex") && !hub.services[0].allows("initech") && hub.services[1].allows("initech"))
        #expect(hub.services[0].proxyProtocol && !hub.services[1].proxyProtocol, "PROXY v2 is on unless turned off")
        #expect(hub.listeners[0].agent == TetherIdentity(tenant: "acme", agentID: "node-1"))
    }

    /// `admin`: loopback by default; the hub's needs an operator token, and so does an edge's off
    /// loopback; a token is stored as its SHA-256 only.
    @Test func theAdminListenerIsReadAndItsTokensRequiredWhereTheyMatter() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let digest = String(repeating: "ab", count: 32)
        guard case .edge(let edge) = try directory.load(Self.edge + "\nadmin: {}") else {
            Issue.record("not an edge")
            return
        }
        #expect(edge.admin == AdminConfiguration(listen: .tcp(host: "127.0.0.1", port: 9464)))
        let hubText = "role: hub\nlisten: 0.0.0.0:443\ntls: {certificate: hub.pem, key: hub.key, ca: ca.pem}\n"
        guard case .hub(let hub) = try directory.load(hubText + "admin: {operators: [{id: ops, sha256: \(digest)}]}") else {
            Issue.record("not a hub")
            return
        }
        #expect(hub.admin?.listen == .tcp(host: "127.0.0.1", port: 9465))
        #expect(hub.admin?.operators == [.init(id: "ops", sha256: Array(repeating: 0xAB, count: 32))])
        let refusals: [(String, String, String)] = [
            (hubText + "admin: {}", "admin", "the hub's admin endpoints need an operator token"),
            (Self.edge + "\nadmin: {listen: 0.0.0.0:9464}", "admin", "off loopback needs an operator token"),
            (hubText + "admin: {operators: [{id: ops, sha256: plaintext-token}]}", "admin.operators[0].sha256", "64 hexadecimal"),
            (hubText + "admin: {operators: [{id: ops, sha256: \(digest)}, {id: ops, sha256: \(digest)}]}", "admin.operators[1].id", "a second"),
        ]
        for (text, path, message) in refusals {
            let error = directory.refusal(of: text)
            #expect(error?.path == path && error?.message.contains(message) == true, "\(String(describing: error))")
        }
    }

    /// README "Front door": the listener, its certificate, zone, timeout and tokens; mistakes named.
    @Test func theFrontDoorIsReadAndItsMistakesNamed() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let digest = String(repeating: "cd", count: 32)
        let hubText = "role: hub\nlisten: 0.0.0.0:443\ntls: {certificate: hub.pem, key: hub.key, ca: ca.pem}\n"
        let door = "frontDoor:\n  listen: 0.0.0.0:8443\n  tls: {certificate: hub.pem, key: hub.key}\n  zone: Agents.Plane.Example\n"
        let tokens = "  tokens: [{id: ui, tenant: acme, user: ui@plane.example, sha256: \(digest)}]\n"
        guard case .hub(let hub) = try directory.load(hubText + door + "  answerTimeout: 20s\n" + tokens + "access: {file: access.jsonl}\n")
        else {
            Issue.record("not a hub")
            return
        }
        let frontDoor = try #require(hub.frontDoor)
        #expect(frontDoor.listen == .tcp(host: "0.0.0.0", port: 8443))
        #expect(frontDoor.zone == "agents.plane.example")
        #expect(frontDoor.answerTimeout == .seconds(20))
        #expect(frontDoor.tokens == [PlaneToken(id: "ui", tenant: "acme", user: "ui@plane.example", sha256: Array(repeating: 0xCD, count: 32))])
        #expect(hub.logging.accessFile == directory.path + "/access.jsonl")
        let refusals: [(String, String, String)] = [
            (hubText + door, "frontDoor", "needs tokens"),
            (hubText + door + "  tokens: [{id: ui, tenant: Acme_1, user: u, sha256: \(digest)}]\n", "frontDoor.tokens[0].tenant", "a tenant"),
            (hubText + door + "  tokens: [{id: ui, tenant: acme, user: u, sha256: s3cr3t}]\n", "frontDoor.tokens[0].sha256", "64 hexadecimal"),
            (hubText + door.replacingOccurrences(of: "Agents.Plane.Example", with: "agents..example") + tokens, "frontDoor.zone", "a DNS name"),
            (hubText + door + tokens + "listeners: [{name: front door, listen: 127.0.0.1:1, agent: tether://a/b, target: t}]\n",
             "listeners[0].name", "the front door's"),
        ]
        for (text, path, message) in refusals {
            let error = directory.refusal(of: text)
            #expect(error?.path == path && error?.message.contains(message) == true, "\(String(describing: error))")
        }
    }

    @Test func logSourcesAreFilesOrAGlobInOneDirectory() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let logs = "\nlogs:\n  - {name: kube, path: /var/log/pf9/kube.log}\n  - {name: pf9, path: \"/var/log/pf9/*.log\"}\n"
        guard case .edge(let edge) = try directory.load(Self.edge + logs) else {
            Issue.record("not an edge")
            return
        }
        #expect(edge.logs.map(\.name) == ["kube", "pf9"])
        #expect(!edge.logs[0].isGlob && edge.logs[1].isGlob)
        #expect(edge.logs[1].file(named: nil) == nil && edge.logs[0].file(named: "x.log") == nil)
        let refusals: [(String, String)] = [
            ("{name: a, path: \"/var/*/a.log\"}", "one directory"), ("{name: a, path: var/a.log}", "absolute path"),
            ("{name: kube, path: /a.log}\n  - {name: kube, path: /b.log}", "a second log source"),
        ]
        for (entry, message) in refusals {
            let error = directory.refusal(of: Self.edge + "\nlogs:\n  - " + entry + "\n")
            #expect(error?.path.hasPrefix("logs[") == true && error?.message.contains(message) == true, "\(String(describing: error))")
        }
    }

    @Test func theLatestMetadataBoundsAreReadAsSizes() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let hubText = "role: hub\nlisten: 0.0.0.0:443\ntls: {certificate: hub.pem, key: hub.key, ca: ca.pem}\n"
        guard case .hub(let hub) = try directory.load(hubText + "latestMetadata: {maxDocument: 64KiB, maxTotal: 2GiB}\n") else {
            Issue.record("not a hub")
            return
        }
        #expect(hub.latestMetadata.maxDocument == 65_536 && hub.latestMetadata.maxTotal == 2 << 30)
        guard case .hub(let defaults) = try directory.load(hubText) else { return }
        #expect(defaults.latestMetadata == HubConfiguration.LatestMetadata())
        for (value, key) in [("lots", "maxDocument"), ("65MiB", "maxDocument"), ("-1", "maxTotal"), ("17GiB", "maxTotal")] {
            let error = directory.refusal(of: hubText + "latestMetadata: {\(key): \(value)}\n")
            #expect(
                error?.path == "latestMetadata.\(key)" && error?.line == 4 && error?.message.contains("a size") == true,
                "\(String(describing: error))")
        }
    }

    /// Each mistake names the file, the line and column of the key or value, and the key.
    @Test(arguments: [
        ("    clas: bulk", "forwards[1].clas", 19, 5, "unknown key"),
        ("    class: bulky", "forwards[1].class", 19, 12, "expected a stream class"),
        ("    listen: 127.0.0.1:99999", "forwards[1].listen", 17, 13, "port in 1…65535"),
        ("    listen: unix:run/api.sock", "forwards[1].listen", 17, 13, "absolute path"),
        ("  keepalive: 45s", "dial.keepalive", 11, 14, "duration"),
        ("  source: node-1.example", "dial.source", 11, 11, "an IP address"),
        ("  - name: api", "forwards[1].name", 16, 11, "a second forward named api"),
    ])
    func aMistakeIsNamedWithItsLineAndColumn(_ replacement: String, _ path: String, _ line: Int, _ column: Int, _ message: String) throws {
        let directory = try Directory()
        defer { directory.remove() }
        var lines = Self.edge.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let index = line - 1
        lines[index] = replacement
        do {
            _ = try directory.load(lines.joined(separator: "\n"))
            Issue.record("\(replacement) was accepted")
        } catch {
            #expect(error.file == directory.path + "/relay.yaml")
            #expect(error.path == path, "\(error)")
            #expect(error.line == line && error.column == column, "\(error)")
            #expect(error.message.contains(message), "\(error)")
        }
    }

    @Test func missingKeysAndBadDocumentsAreNamed() throws {
        let directory = try Directory()
        defer { directory.remove() }
        #expect(throws: ConfigError.self) { try directory.load("") }
        do {
            _ = try directory.load("role: edge\nhubs: [a:1]\ntls: {certificate: edge.pem, key: edge.key, ca: ca.pem}\n")
            Issue.record("accepted without a policy")
        } catch {
            #expect(error.message == "missing key \"policy\"", "\(error)")
        }
        do {
            _ = try directory.load("role: edge\nhubs: [a:1\n")
            Issue.record("accepted broken YAML")
        } catch {
            #expect(error.line != nil && error.message.hasPrefix("YAML:"), "\(error)")
        }
        do {
            _ = try directory.load("role: edge\nhubs: [a:1]\ntls: {certificate: missing.pem, key: edge.key, ca: ca.pem}\npolicy: policy.yaml\n")
            Issue.record("accepted a missing certificate")
        } catch {
            #expect(error.path == "tls.certificate" && error.message.contains("cannot read"), "\(error)")
        }
        do {
            _ = try directory.load("role: gateway\n")
            Issue.record("accepted an unknown role")
        } catch {
            #expect(error.path == "role" && error.line == 1 && error.column == 7, "\(error)")
        }
    }

    /// spec/POLICY.md §3: everything that leaves needs a rule; the cross-check lists each gap.
    @Test func forwardsAndExposesThePolicyLacksAreListed() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let text = Self.edge
            .replacingOccurrences(of: "    service: kube-api\n    class: bulk", with: "    service: kube-api\n    class: command")
            .replacingOccurrences(of: "  - name: node-exporter", with: "  - name: ssh")
            .replacingOccurrences(of: "    service: inventory", with: "    service: environment")
            + "\nlogs:\n  - {name: kube, path: /var/log/kube.log}\n"
        guard case .edge(let edge) = try directory.load(text) else {
            Issue.record("not read as an edge")
            return
        }
        let problems = edge.problems(against: try PolicyFile.load(path: edge.policy))
        #expect(problems.count == 4, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("logs kube:") && $0.contains("class: [logs]") })
        #expect(problems.contains { $0.hasPrefix("metadata agents:") && $0.contains("environment (metadata)") })
        #expect(problems.contains { $0.hasPrefix("forward api-unix:") && $0.contains("kube-api (command)") })
        #expect(problems.contains { $0.hasPrefix("expose ssh:") })
    }
}
