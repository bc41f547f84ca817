import Foundation
import Logging
import ServiceLifecycle
import Tether
import NIOCore
import NIOPosix
import TetherBench
import TetherTLS
import TetherWire
import Testing

@testable import TetherRelay

/// The hub's front door (README "Front door", spec/RELAYS.md §4) with curl as the plane's program:
/// `CONNECT` over TLS to the hub, then HTTPS end to end to a real server (Python's http.server)
/// behind an edge's exposed target.
@Suite(.timeLimit(.minutes(3))) struct FrontDoorTests {
    static let zone = "agents.test"

    /// A node's HTTPS server under its own CA (as a kube API server has), named as the front door
    /// names it: Python's http.server and ssl (node-web-server.py beside this file).
    struct NodeWebServer {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("node-web-server.py").path
        let process: Process
        let port: Int
        let ca: String

        static func start(in directory: String, name: String) async throws -> NodeWebServer {
            let authority = try CertificateAuthority(commonName: "node web CA")
            try authority.issued.write(certificateTo: directory + "/web-ca.pem", keyTo: directory + "/web-ca.key")
            try authority.issue(.hub(dnsNames: [name], ipAddresses: []))
                .write(certificateTo: directory + "/web.pem", keyTo: directory + "/web.key")
            let port = try await RelayProcessTests.Site.freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = [Self.script, "\(port)", directory + "/web.pem", directory + "/web.key"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle(forWritingAtPath: "/dev/stderr")
            try process.run()
            let server = NodeWebServer(process: process, port: port, ca: directory + "/web-ca.pem")
            // Listening once a connection is taken.
            while process.isRunning {
                if (try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
                    .map({ $0.close(promise: nil) }) != nil
                {
                    return server
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw TetherTestError("the node's web server exited: \(process.terminationStatus)")
        }

        func stop() async throws { try await RelayProcessTests.kill(self.process) }
    }

    struct Answer {
        var connect: Int  // the front door's answer to CONNECT; 0 when there was none
        var status: Int  // the node's answer to GET
        var body: String
        var errors: String
    }

    /// `curl` through the front door at `port` to `host`, with `user:password` as the proxy's Basic
    /// credentials or a bearer header.
    static func curl(
        frontDoor port: Int, ca: String, host: String, path: String = "/", webCA: String, basic: String? = nil,
        bearer: String? = nil, extra: [String] = []
    ) async throws -> Answer {
        var arguments = [
            "curl", "-sS", "--max-time", "60", "--proxy", "https://127.0.0.1:\(port)", "--proxy-cacert", ca, "--cacert", webCA,
            "-w", "\n%{http_connect} %{http_code}",
        ]
        if let basic { arguments += ["--proxy-user", basic] }
        if let bearer { arguments += ["--proxy-header", "Proxy-Authorization: Bearer \(bearer)"] }
        let curl = try await Program.run(arguments + extra + ["https://\(host)\(path)"])
        let lines = curl.output.split(separator: "\n", omittingEmptySubsequences: false)
        let codes = (lines.last ?? "").split(separator: " ").map { Int($0) ?? 0 }
        return Answer(
            connect: codes.first ?? 0, status: codes.count > 1 ? codes[1] : 0, body: lines.dropLast().joined(separator: "\n"),
            errors: curl.errors)
    }

    /// A pair whose edge exposes `web` (the node's web server) and whatever `exposes` adds, and
    /// whose hub has a front door with a token of tenant `demo` (user alice) and one of `globex`
    /// (user bob); runs `body` with the front door's port and the web server.
    static func withFrontDoor(
        policy: String = "", exposes: [EdgeConfiguration.Expose] = [], answerTimeout: TimeAmount = .seconds(15),
        _ body: (_ pair: RelayPair, _ hub: HubRelay, _ port: Int, _ web: NodeWebServer) async throws -> Void
    ) async throws {
        var pair = try await RelayPair(
            policy: """
                version: 1
                fromPlane:
                  - {service: web, class: [bulk], opaque: true}
                """ + policy)
        let web = try await NodeWebServer.start(in: pair.directory, name: "web.node-1.demo.\(Self.zone)")
        pair.edge.exposes = [.init(name: "web", target: .tcp(host: "127.0.0.1", port: web.port))] + exposes
        var frontDoor = FrontDoorConfiguration(
            listen: .tcp(host: "127.0.0.1", port: 0), certificate: pair.directory + "/hub.pem", key: pair.directory + "/hub.key",
            zone: Self.zone)
        frontDoor.tokens = [
            PlaneToken(id: "ui", tenant: "demo", user: "alice@plane.example", sha256: Digest.sha256(Array(Self.token.utf8))),
            PlaneToken(id: "other", tenant: "globex", user: "bob@plane.example", sha256: Digest.sha256(Array(Self.otherToken.utf8))),
        ]
        frontDoor.answerTimeout = answerTimeout
        pair.hub.frontDoor = frontDoor
        let ran: Result<Void, any Error>
        do {
            try await pair.run { hub, _ in
                try await body(pair, hub, try #require(hub.boundAddress(ofListener: HubRelay.frontDoorName)?.port), web)
            }
            ran = .success(())
        } catch {
            ran = .failure(error)
        }
        try await web.stop()
        try ran.get()
    }

    static let token = Canary.secret("front-door-token")
    static let otherToken = Canary.secret("front-door-token-b")

    @Test func curlReachesANodesHTTPSServerAndEveryRefusalHasItsStatus() async throws {
        try await Self.withFrontDoor(
            policy: "\n  - {service: down, class: [bulk], opaque: true}\n",
            exposes: [.init(name: "down", target: .tcp(host: "127.0.0.1", port: try await RelayProcessTests.Site.freePort()))]
        ) { pair, hub, port, web in
            let ca = pair.directory + "/ca.pem"
            func ask(_ host: String, basic: String? = "alice:\(Self.token)", bearer: String? = nil) async throws -> Answer {
                try await Self.curl(frontDoor: port, ca: ca, host: host, webCA: web.ca, basic: basic, bearer: bearer)
            }
            let webName = "web.node-1.demo.\(Self.zone)"

            // Basic (kubectl's proxy-url) and Bearer: CONNECT 200, then the node's own HTTPS answer.
            for answer in [try await ask(webName), try await ask(webName, basic: nil, bearer: Self.token)] {
                #expect(answer.connect == 200, "\(answer)")
                #expect(answer.status == 200, "\(answer)")
                #expect(answer.body == "node web server: /\n", "\(answer.body.prefix(200))")
            }

            // Each refusal with its status.
            #expect(try await ask(webName, basic: "alice:wrong").connect == 407)
            #expect(try await ask(webName, basic: nil).connect == 407)
            #expect(try await ask("secret.node-1.demo.\(Self.zone)").connect == 403, "not in the node's policy")
            #expect(try await ask("down.node-1.demo.\(Self.zone)").connect == 502, "the target is down")
            #expect(try await ask("web.node-1.elsewhere.example").connect == 400, "not under the zone")

            // Tenant isolation: another tenant's connected agent is answered exactly as an unknown
            // one — and its edge receives no frame on that account (its keepalive's PINGs aside).
            try await Self.withSecondEdge(pair, of: hub, TetherIdentity(tenant: "globex", agentID: "node-2")!) { other in
                // Settled: the hub's SETTINGS and its ACK arrived before its answer to this PING.
                _ = try await other.ping()
                let before = try await other.counters()
                let unknown = try await Self.connect(port, ca: ca, "web.node-9.demo.\(Self.zone)", basic: "alice:\(Self.token)")
                let foreign = try await Self.connect(port, ca: ca, "web.node-2.globex.\(Self.zone)", basic: "alice:\(Self.token)")
                let foreignToken = try await Self.connect(port, ca: ca, webName, basic: "bob:\(Self.otherToken)")
                // The globex token reaches its own agent (whose edge exposes no such target).
                let own = try await Self.connect(port, ca: ca, "web.node-2.globex.\(Self.zone)", basic: "bob:\(Self.otherToken)")
                #expect(unknown.hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(unknown)")
                #expect(unknown.hasSuffix("\r\n\r\n" + FrontDoor.noSuchAgent), "\(unknown)")
                #expect(foreign == unknown, "octet for octet")
                #expect(foreignToken == unknown)
                #expect(own.hasPrefix("HTTP/1.1 404 Not Found\r\n") && own != unknown, "\(own)")
                let after = try await other.counters()
                #expect(after.framesReceived - after.pingsReceived == before.framesReceived - before.pingsReceived + 1)
                #expect(after.streamsOpenedByPeer == 1, "only the globex token's own stream reached node-2")
            }
        }
    }

    /// The front door's whole answer to a CONNECT for `authority` with Basic `credentials`, read
    /// until the front door closes the connection or 20 s passed (curl shows no body of a refusal).
    static func connect(_ port: Int, ca: String, _ authority: String, basic credentials: String) async throws -> String {
        let script = """
            import socket, ssl, sys
            port, ca, authority, credentials = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
            context = ssl.create_default_context(cafile=ca)
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="127.0.0.1") as tls:
                tls.sendall(("CONNECT %s:443 HTTP/1.1\\r\\nHost: %s:443\\r\\nProxy-Authorization: Basic %s\\r\\n\\r\\n"
                             % (authority, authority, credentials)).encode())
                answer = b""
                try:
                    while chunk := tls.recv(65536):
                        answer += chunk
                except (socket.timeout, ssl.SSLError):
                    pass
            sys.stdout.write(answer.decode("latin-1"))
            """
        let client = try await Program.run(
            ["python3", "-c", script, "\(port)", ca, authority, Data(credentials.utf8).base64EncodedString()])
        return client.output
    }

    /// Runs a second edge, of `identity`, beside `pair`'s, dialing its `hub` and exposing nothing;
    /// `body` gets its connection once it is up.
    static func withSecondEdge(
        _ pair: RelayPair, of hub: HubRelay, _ identity: TetherIdentity, _ body: (TetherConnection) async throws -> Void
    ) async throws {
        try pair.certificates.issueEdge(identity, named: "edge-b")
        var configuration = pair.edge
        configuration.hubs = [.tcp(host: "127.0.0.1", port: try await hub.localAddress.port!)]
        configuration.tls.certificate = pair.directory + "/edge-b.pem"
        configuration.tls.key = pair.directory + "/edge-b.key"
        configuration.exposes = []
        let edge = try EdgeRelay(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton)
        let services = ServiceGroup(services: [edge], logger: Logger(label: "test"))
        let running = Task { try await services.run() }
        let result: Result<Void, any Error>
        do {
            while edge.connection == nil { try await Task.sleep(for: .milliseconds(10)) }
            result = .success(try await body(try #require(edge.connection)))
        } catch {
            result = .failure(error)
        }
        await services.triggerGracefulShutdown()
        try await running.value
        try result.get()
    }

    /// A 50 MiB upload arrives intact (its SHA-256 as the node's server read it), and 200 CONNECTs
    /// to one agent are carried at the same time: the node's server answers `/together/200` only
    /// once all 200 requests wait in it together.
    @Test func aLargeUploadAndTwoHundredConnectsAtOnce() async throws {
        try await Self.withFrontDoor { pair, hub, port, web in
            let ca = pair.directory + "/ca.pem"
            let host = "web.node-1.demo.\(Self.zone)"
            let file = pair.directory + "/upload.bin"
            let upload = Array(try #require(FileHandle(forReadingAtPath: "/dev/urandom")).readData(ofLength: 50 << 20))
            FileManager.default.createFile(atPath: file, contents: Data(upload))
            let uploaded = try await Self.curl(
                frontDoor: port, ca: ca, host: host, path: "/upload", webCA: web.ca, basic: "alice:\(Self.token)",
                extra: ["--upload-file", file])
            #expect(uploaded.connect == 200 && uploaded.status == 200, "\(uploaded)")
            let read = try JSONSerialization.jsonObject(with: Data(uploaded.body.utf8)) as? [String: Any]
            #expect(read?["octets"] as? Int == upload.count, "\(uploaded.body)")
            #expect(read?["sha256"] as? String == RelayProcessTests.hex(Digest.sha256(upload)))

            let transfers = 200
            var arguments = [
                "curl", "-sS", "--max-time", "150", "--parallel", "--parallel-immediate", "--parallel-max", "\(transfers)",
                "--proxy", "https://127.0.0.1:\(port)", "--proxy-cacert", ca, "--cacert", web.ca, "--proxy-user", "alice:\(Self.token)",
                "-w", "%{http_connect} %{http_code}\\n",
            ]
            for _ in 0..<transfers { arguments += ["-o", "/dev/null", "https://\(host)/together/\(transfers)"] }
            let together = try await Program.run(arguments)
            let answers = together.output.split(separator: "\n")
            #expect(answers.count == transfers, "\(together.errors)")
            #expect(answers.allSatisfy { $0 == "200 200" }, "\(Dictionary(grouping: answers, by: { $0 }).mapValues(\.count)) \(together.errors)")
        }
    }

    /// An edge that does not connect its target within the front door's answer timeout: `504`,
    /// and the stream is cancelled (the edge's connect never completes: a full accept queue).
    @Test func aTargetThatNeverAnswersIs504() async throws {
        let stuck = try StuckListener()
        defer { stuck.close() }
        try await Self.withFrontDoor(
            policy: "\n  - {service: stuck, class: [bulk], opaque: true}\n",
            exposes: [.init(name: "stuck", target: .tcp(host: "127.0.0.1", port: stuck.port))], answerTimeout: .seconds(1)
        ) { pair, hub, port, web in
            let answer = try await Self.curl(
                frontDoor: port, ca: pair.directory + "/ca.pem", host: "stuck.node-1.demo.\(Self.zone)", webCA: web.ca,
                basic: "alice:\(Self.token)")
            #expect(answer.connect == 504, "\(answer)")
            #expect(answer.errors.contains("504"), "\(answer.errors)")
        }
    }
}
