import Foundation
import Logging
import NIOCore
import NIOPosix
import TetherBench
import Testing

@testable import TetherRelay

/// The edge's HTTP CONNECT egress proxy (README "Egress proxy"), against Debian's tinyproxy.
@Suite struct EgressProxyTests {
    // MARK: Settings

    @Test func proxyURLsAreRead() throws {
        let plain = try EgressProxy(url: "http://proxy.corp:3128")
        #expect(plain.host == "proxy.corp" && plain.port == 3128 && plain.credentials == nil)
        #expect(try EgressProxy(url: "proxy.corp").port == 80)
        let withUser = try EgressProxy(url: "http://svc%40corp:p%3Ass@10.0.0.1:8080/")
        #expect(withUser.credentials == .basic(user: "svc@corp", password: .value("p:ss")))
        #expect(try EgressProxy(url: "http://[fd00::1]:3128").host == "fd00::1")
        // A refusal names the URL without its credentials.
        #expect(throws: EgressProxyError.self) { try EgressProxy(url: "https://u:hunter2@proxy:443") }
        do {
            _ = try EgressProxy(url: "socks5://u:hunter2@proxy:1080")
        } catch {
            #expect(!error.description.contains("hunter2"), "\(error)")
            #expect(error.description.contains("only http://"))
        }
    }

    @Test func noProxyListsMatchNamesSubdomainsAddressesAndBlocks() {
        let list = NoProxy("localhost, .internal.corp,hub.example.com:443 10.0.0.0/8,192.168.1.7, fd00::/8,[::1]")
        #expect(list.bypasses("localhost"))
        #expect(list.bypasses("hub.internal.corp") && list.bypasses("internal.corp") && !list.bypasses("xinternal.corp"))
        #expect(list.bypasses("HUB.example.com") && !list.bypasses("example.com"))
        #expect(list.bypasses("10.200.3.4") && !list.bypasses("11.0.0.1"))
        #expect(list.bypasses("192.168.1.7") && !list.bypasses("192.168.1.8"))
        #expect(list.bypasses("fd12:3456::1") && list.bypasses("::1") && !list.bypasses("fe80::1"))
        #expect(!list.bypasses("hub.saas.example"))
        #expect(NoProxy("*").bypasses("anything"))
        #expect(!NoProxy("").bypasses("anything"))
    }

    @Test func theEnvironmentNamesTheProxy() throws {
        #expect(try EgressProxy.fromEnvironment([:]) == nil)
        #expect(try EgressProxy.fromEnvironment(["HTTPS_PROXY": ""]) == nil)
        let proxy = try #require(try EgressProxy.fromEnvironment(["https_proxy": "http://p:3128", "no_proxy": "hub.local"]))
        #expect(proxy.host == "p" && proxy.noProxy.bypasses("hub.local") && !proxy.noProxy.bypasses("hub.saas"))
        #expect(try EgressProxy.fromEnvironment(["HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"])?.host == "upper")
    }

    /// Basic from a user and a password, Bearer from a token file read again on every dial.
    @Test func credentialsGoInProxyAuthorization() throws {
        let basic = EgressProxy(host: "p", port: 1, credentials: .basic(user: "alice", password: .value("s3cret")))
        #expect(try basic.connectHeaders(for: "hub:443")["Proxy-Authorization"] == ["Basic YWxpY2U6czNjcmV0"])
        let file = NSTemporaryDirectory() + "tether-token-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "first\n".write(toFile: file, atomically: true, encoding: .utf8)
        let bearer = EgressProxy(host: "p", port: 1, credentials: .bearer(token: .file(file)))
        #expect(try bearer.connectHeaders(for: "hub:443")["Proxy-Authorization"] == ["Bearer first"])
        try "second".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try bearer.connectHeaders(for: "hub:443")["Proxy-Authorization"] == ["Bearer second"])
        #expect(try bearer.connectHeaders(for: "hub:443")["Host"] == ["hub:443"])
    }

    // MARK: Through tinyproxy

    /// The edge's connection goes through the proxy (its log shows the CONNECT to the hub), and a
    /// forward carries octets over it.
    @Test(.timeLimit(.minutes(2))) func theEdgeReachesTheHubThroughTinyproxy() async throws {
        let echo = try await RelayProcessTests.echoServer()
        var pair = try await Self.echoPair(echoPort: echo.localAddress!.port!)
        let proxy = try await Tinyproxy.start()
        defer { proxy.stop() }
        pair.edge.proxy = .configured(EgressProxy(host: "127.0.0.1", port: proxy.port))
        try await pair.run { hub, edge in
            let replies = try await LineCollector.exchange(with: edge.boundAddress(ofForward: "echo")!, lines: ["through the proxy"])
            #expect(replies == ["through the proxy"])
            let hubPort = try await hub.localAddress.port!
            #expect(proxy.requests().contains { $0.contains("CONNECT 127.0.0.1:\(hubPort)") }, "\(proxy.requests())")
        }
        try await echo.close()
    }

    /// A proxy that requires credentials: without them the edge does not connect and says the
    /// proxy wants credentials; with them (user and password file) it connects.
    @Test(.timeLimit(.minutes(2))) func aProxyThatRequiresCredentials() async throws {
        let echo = try await RelayProcessTests.echoServer()
        var pair = try await Self.echoPair(echoPort: echo.localAddress!.port!)
        let secret = Canary.secret("proxy-password")
        let proxy = try await Tinyproxy.start(basicAuth: ("tether", secret))
        defer { proxy.stop() }
        let recorder = AuditRecorder()
        pair.edgeLogger = Logger(label: "tether.edge") { _ in recorder }
        pair.edge.proxy = .configured(EgressProxy(host: "127.0.0.1", port: proxy.port))
        try await pair.run(connected: false) { _, edge in
            let refused = try await recorder.waitFor { $0.message.contains("dial failed") }
            #expect(refused.metadata["error"]?.contains("proxy-auth") == true, "\(refused.rendered)")
            #expect(refused.metadata["error"]?.contains("407") == true, "\(refused.rendered)")
            #expect(edge.connection == nil)
        }
        var again = try await Self.echoPair(echoPort: echo.localAddress!.port!)
        let password = again.directory + "/proxy-password"
        try (secret + "\n").write(toFile: password, atomically: true, encoding: .utf8)
        again.edgeLogger = pair.edgeLogger
        again.edge.proxy = .configured(EgressProxy(host: "127.0.0.1", port: proxy.port, credentials: .basic(user: "tether", password: .file(password))))
        try await again.run { _, edge in
            let replies = try await LineCollector.exchange(with: edge.boundAddress(ofForward: "echo")!, lines: ["authenticated"])
            #expect(replies == ["authenticated"])
        }
        #expect(recorder.all().contains { $0.message.contains("connected") })
        #expect(!recorder.all().contains { $0.rendered.contains(secret) })
        try await echo.close()
    }

    /// Behind a proxy, a hub certificate from a CA the edge does not trust — what a TLS-inspecting
    /// proxy presents — gives an error that names the proxy and says it may be replacing it.
    @Test(.timeLimit(.minutes(2))) func aHubCertificateFromAnotherCASaysTheProxyMayBeInspecting() async throws {
        let other = try ThrowAwayCertificates()
        defer { other.remove() }
        var pair = try await Self.echoPair(echoPort: 9)
        let proxy = try await Tinyproxy.start()
        defer { proxy.stop() }
        let recorder = AuditRecorder()
        pair.edgeLogger = Logger(label: "tether.edge") { _ in recorder }
        pair.edge.tls.trustedCAs = [other.directory + "/ca.pem"]
        pair.edge.proxy = .configured(EgressProxy(host: "127.0.0.1", port: proxy.port))
        try await pair.run(connected: false) { _, _ in
            let failed = try await recorder.waitFor { $0.message.contains("dial failed") }
            let error = failed.metadata["error"] ?? ""
            #expect(error.contains("the connection goes through the proxy at 127.0.0.1:\(proxy.port)"), "\(error)")
            #expect(error.contains("may be replacing the hub's certificate"), "\(error)")
            #expect(failed.message.contains("cannot help"), "a permanent failure: \(failed.message)")
        }
    }

    /// `tether edge` as a process takes the proxy and its credentials from `HTTPS_PROXY` (its log
    /// is among those `.ci/secrets-check` searches for the password).
    @Test(.timeLimit(.minutes(2))) func theEdgeProcessTakesHTTPSProxyFromItsEnvironment() async throws {
        let echo = try await RelayProcessTests.echoServer()
        let site = try await RelayProcessTests.Site(echoPort: echo.localAddress!.port!)
        defer { site.certificates.remove() }
        let secret = Canary.secret("proxy-password")
        let proxy = try await Tinyproxy.start(basicAuth: ("tether", secret))
        defer { proxy.stop() }
        let hub = try site.start("hub")
        let edge = try site.start(
            "edge", environment: ["HTTPS_PROXY": "http://tether:\(secret)@127.0.0.1:\(proxy.port)", "NO_PROXY": "example.com"])
        try await RelayProcessTests.waitUntilCarried(site.forward)
        #expect(proxy.requests().contains { $0.contains("CONNECT 127.0.0.1:\(site.hubPort)") }, "\(proxy.requests())")
        try await RelayProcessTests.kill(edge)
        try await RelayProcessTests.kill(hub)
        try await echo.close()
    }

    /// A pair whose edge forwards `echo` to a hub service spliced to the echo server.
    static func echoPair(echoPort: Int) async throws -> RelayPair {
        var pair = try await RelayPair(
            policy: """
                version: 1
                toPlane:
                  - {service: echo, class: [bulk], opaque: true}
                """)
        var service = HubConfiguration.Service(name: "echo", backend: .tcp(host: "127.0.0.1", port: echoPort), tenants: ["demo"])
        service.proxyProtocol = false
        pair.hub.services = [service]
        pair.edge.forwards = [.init(name: "echo", listen: .tcp(host: "127.0.0.1", port: 0), service: "echo", streamClass: .bulk)]
        pair.edge.dial.initial = .milliseconds(50)
        pair.edge.dial.maximum = .milliseconds(500)
        return pair
    }
}

/// Debian's tinyproxy on 127.0.0.1, in the foreground, logging each request.
struct Tinyproxy {
    let process: Process
    let port: Int
    let log: String

    /// Another listener may take the port between `freePort()` and tinyproxy's bind (a full suite
    /// binds hundreds): ready means tinyproxy itself answers there, else it starts again elsewhere.
    static func start(basicAuth: (user: String, password: String)? = nil) async throws -> Tinyproxy {
        for _ in 0..<5 {
            if let proxy = try await Self.launch(basicAuth: basicAuth) { return proxy }
        }
        throw RelayError("tinyproxy did not start (is Debian's tinyproxy installed? .ci/run installs it)")
    }

    private static func launch(basicAuth: (user: String, password: String)?) async throws -> Tinyproxy? {
        let port = try await RelayProcessTests.Site.freePort()
        let directory = NSTemporaryDirectory() + "tinyproxy-\(port)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let log = directory + "/tinyproxy.log"
        var configuration = """
            Port \(port)
            Listen 127.0.0.1
            Timeout 600
            LogFile "\(log)"
            LogLevel Connect
            MaxClients 50
            Allow 127.0.0.1

            """
        if let basicAuth { configuration += "BasicAuth \(basicAuth.user) \(basicAuth.password)\n" }
        let file = directory + "/tinyproxy.conf"
        try configuration.write(toFile: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/tinyproxy")
        process.arguments = ["-d", "-c", file]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Ready once tinyproxy answers a request on the port (its error page names it).
        for _ in 0..<200 where process.isRunning {
            let probe = try await Program.run(["curl", "-s", "-i", "--max-time", "5", "-x", "http://127.0.0.1:\(port)", "http://127.0.0.1:1/"])
            if probe.output.lowercased().contains("tinyproxy") { return Tinyproxy(process: process, port: port, log: log) }
            try await Task.sleep(for: .milliseconds(25))
        }
        if process.isRunning { process.terminate() }
        return nil
    }

    /// The request lines tinyproxy logged.
    func requests() -> [String] {
        let text = (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { $0.contains("Request") }.map(String.init)
    }

    func stop() {
        if self.process.isRunning { self.process.terminate() }
        try? FileManager.default.removeItem(atPath: (self.log as NSString).deletingLastPathComponent)
    }
}
