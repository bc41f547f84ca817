import Foundation
import NIOCore
import NIOPosix
import TetherBench
import TetherTLS
import TetherWire
import Testing

@testable import TetherRelay

/// The hub's front door (README "Front door", spec/RELAYS.md §4) with curl as the plane's program:
/// `CONNECT` over TLS to the hub, then HTTPS end to end to a real server (`openssl s_server`)
/// behind an edge's exposed target.
@Suite(.timeLimit(.minutes(3))) struct FrontDoorTests {
    static let zone = "agents.test"

    /// A node's HTTPS server under its own CA (as a kube API server has), named as the front door
    /// names it: `openssl s_server -www` answers GET with a page about the TLS session.
    struct NodeWebServer {
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
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = [
                "s_server", "-accept", "127.0.0.1:\(port)", "-cert", directory + "/web.pem", "-key", directory + "/web.key",
                "-www", "-quiet",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let server = NodeWebServer(process: process, port: port, ca: directory + "/web-ca.pem")
            // Listening once a connection is taken.
            for _ in 0..<300 {
                if (try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
                    .map({ $0.close(promise: nil) }) != nil
                {
                    return server
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            process.terminate()
            throw TetherTestError("openssl s_server did not listen on \(port)")
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
        frontDoor port: Int, ca: String, host: String, webCA: String, basic: String? = nil, bearer: String? = nil
    ) async throws -> Answer {
        var arguments = [
            "curl", "-sS", "--max-time", "60", "--proxy", "https://127.0.0.1:\(port)", "--proxy-cacert", ca, "--cacert", webCA,
            "-w", "\n%{http_connect} %{http_code}",
        ]
        if let basic { arguments += ["--proxy-user", basic] }
        if let bearer { arguments += ["--proxy-header", "Proxy-Authorization: Bearer \(bearer)"] }
        let curl = try await Program.run(arguments + ["https://\(host)/"])
        let lines = curl.output.split(separator: "\n", omittingEmptySubsequences: false)
        let codes = (lines.last ?? "").split(separator: " ").map { Int($0) ?? 0 }
        return Answer(
            connect: codes.first ?? 0, status: codes.count > 1 ? codes[1] : 0, body: lines.dropLast().joined(separator: "\n"),
            errors: curl.errors)
    }

    @Test func curlReachesANodesHTTPSServerAndEveryRefusalHasItsStatus() async throws {
        var pair = try await RelayPair(
            policy: """
                version: 1
                fromPlane:
                  - {service: web, class: [bulk], opaque: true}
                  - {service: down, class: [bulk], opaque: true}
                """)
        let webName = "web.node-1.demo.\(Self.zone)"
        let web = try await NodeWebServer.start(in: pair.directory, name: webName)
        let token = Canary.secret("front-door-token")
        pair.edge.exposes = [
            .init(name: "web", target: .tcp(host: "127.0.0.1", port: web.port)),
            .init(name: "down", target: .tcp(host: "127.0.0.1", port: try await RelayProcessTests.Site.freePort())),
        ]
        var frontDoor = FrontDoorConfiguration(
            listen: .tcp(host: "127.0.0.1", port: 0), certificate: pair.directory + "/hub.pem", key: pair.directory + "/hub.key",
            zone: Self.zone)
        frontDoor.tokens = [
            PlaneToken(id: "ui", tenant: "demo", user: "alice@plane.example", sha256: Digest.sha256(Array(token.utf8))),
            PlaneToken(id: "other", tenant: "globex", user: "bob@plane.example", sha256: Digest.sha256(Array((token + "-b").utf8))),
        ]
        pair.hub.frontDoor = frontDoor
        let ca = pair.directory + "/ca.pem"
        let ran: Result<Void, any Error>
        do {
            try await pair.run { hub, _ in
            let port = try #require(hub.boundAddress(ofListener: HubRelay.frontDoorName)?.port)
            func ask(_ host: String, basic: String? = "alice:\(token)", bearer: String? = nil) async throws -> Answer {
                try await Self.curl(frontDoor: port, ca: ca, host: host, webCA: web.ca, basic: basic, bearer: bearer)
            }

            // Basic (kubectl's proxy-url) and Bearer: CONNECT 200, then the node's own HTTPS answer.
            for answer in [try await ask(webName), try await ask(webName, basic: nil, bearer: token)] {
                #expect(answer.connect == 200, "\(answer)")
                #expect(answer.status == 200, "\(answer)")
                #expect(answer.body.contains("s_server"), "\(answer.body.prefix(200))")
            }

            // Each refusal with its status.
            #expect(try await ask(webName, basic: "alice:wrong").connect == 407)
            #expect(try await ask(webName, basic: nil).connect == 407)
            #expect(try await ask("secret.node-1.demo.\(Self.zone)").connect == 403, "not in the node's policy")
            #expect(try await ask("down.node-1.demo.\(Self.zone)").connect == 502, "the target is down")
            #expect(try await ask("web.node-1.elsewhere.example").connect == 400, "not under the zone")
            // An unknown agent and another tenant's agent: the same 404.
            let unknown = try await ask("web.node-9.demo.\(Self.zone)")
            let foreign = try await ask(webName, basic: "bob:\(token)-b")
            #expect(unknown.connect == 404 && foreign.connect == 404)
            #expect(unknown.body == foreign.body)
            }
            ran = .success(())
        } catch {
            ran = .failure(error)
        }
        try await web.stop()
        try ran.get()
    }
}
