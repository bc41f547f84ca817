import Foundation
import TetherTLS
import TetherWire

/// Throw-away certificates in a temporary directory, made with ``CertificateAuthority``: a CA, a
/// hub certificate for `localhost` and 127.0.0.1, an edge certificate, and the bad ones the tests
/// must see refused.
public struct TLSFixtures: Sendable {
    public let directory: String
    public let identity = TetherIdentity(tenant: "acme", agentID: "node-1")!

    public init() throws {
        self.directory = NSTemporaryDirectory() + "tether-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let authority = try CertificateAuthority(commonName: "Tether Test CA")
        try authority.issued.write(certificateTo: self.path("ca.pem"), keyTo: self.path("ca.key"))
        try authority.issue(.hub(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
            .write(certificateTo: self.path("hub.pem"), keyTo: self.path("hub.key"))
        try authority.issue(.edge(self.identity)).write(certificateTo: self.path("edge.pem"), keyTo: self.path("edge.key"))

        var expired = CertificateAuthority.Request.edge(self.identity)
        expired.notBefore = -2 * 86_400
        expired.notAfter = -86_400
        try authority.issue(expired).write(certificateTo: self.path("expired.pem"), keyTo: self.path("expired.key"))

        var noIdentity = CertificateAuthority.Request.edge(self.identity)
        noIdentity.uris = []
        try authority.issue(noIdentity).write(certificateTo: self.path("no-san.pem"), keyTo: self.path("no-san.key"))

        var twoIdentities = CertificateAuthority.Request.edge(self.identity)
        twoIdentities.uris = ["tether://acme/node-1", "tether://acme/node-2"]
        try authority.issue(twoIdentities).write(certificateTo: self.path("two-san.pem"), keyTo: self.path("two-san.key"))

        var badIdentity = CertificateAuthority.Request.edge(self.identity)
        badIdentity.uris = ["https://acme.example/node-1"]
        try authority.issue(badIdentity).write(certificateTo: self.path("bad-san.pem"), keyTo: self.path("bad-san.key"))

        let stranger = try CertificateAuthority(commonName: "Someone Else's CA")
        try stranger.issued.write(certificateTo: self.path("other-ca.pem"), keyTo: self.path("other-ca.key"))
        try stranger.issue(.edge(self.identity)).write(certificateTo: self.path("stranger.pem"), keyTo: self.path("stranger.key"))
        try stranger.issue(.hub(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
            .write(certificateTo: self.path("stranger-hub.pem"), keyTo: self.path("stranger-hub.key"))
    }

    public func path(_ name: String) -> String { self.directory + "/" + name }

    /// The hub's server configuration.
    public func hub(minimumVersion: TLSConfiguration.Version = .tls13) -> TLSConfiguration {
        var configuration = TLSConfiguration(
            role: .server, certificateChainFile: self.path("hub.pem"), privateKeyFile: self.path("hub.key"),
            trustedCAFiles: [self.path("ca.pem")])
        configuration.minimumVersion = minimumVersion
        return configuration
    }

    /// An edge's client configuration with the certificate named `certificate` (`edge`, `expired`, …).
    public func edge(certificate: String = "edge", serverName: String = "localhost") -> TLSConfiguration {
        TLSConfiguration(
            role: .client, certificateChainFile: self.path("\(certificate).pem"),
            privateKeyFile: self.path("\(certificate).key"), trustedCAFiles: [self.path("ca.pem")],
            serverName: serverName)
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}

/// An `openssl` command-line peer (`s_client` / `s_server`), for interop tests.
public final class OpenSSLProcess: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lock = NSLock()
    private var collected = Data()
    private var reader: Thread?

    public init(_ arguments: [String]) throws {
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        self.process.arguments = arguments
        self.process.standardInput = self.input
        self.process.standardOutput = self.output
        self.process.standardError = self.output
        try self.process.run()
        // A plain thread that reads until EOF: nothing here depends on a run loop.
        let handle = self.output.fileHandleForReading
        let thread = Thread { [weak self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { return }
                guard let self else { return }
                self.lock.withLock { self.collected.append(data) }
            }
        }
        thread.start()
        self.reader = thread
    }

    /// Everything the process printed so far (stdout and stderr).
    public var text: String { self.lock.withLock { String(decoding: self.collected, as: UTF8.self) } }

    public func send(_ text: String) {
        self.input.fileHandleForWriting.write(Data(text.utf8))
    }

    /// Waits (up to `seconds`) until the output contains `needle`; returns whether it did.
    public func waitFor(_ needle: String, seconds: Double = 30) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if self.text.contains(needle) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.text.contains(needle)
    }

    /// The port from s_server's `ACCEPT host:port` line.
    public func acceptedPort() async -> Int? {
        guard await self.waitFor("ACCEPT") else { return nil }
        guard let line = self.text.split(separator: "\n").first(where: { $0.hasPrefix("ACCEPT") }),
            let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) })
        else { return nil }
        return port
    }

    /// Ends the process (SIGKILL) and reaps it.
    public func stop() {
        let pid = self.process.processIdentifier
        if pid > 0 {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        try? self.input.fileHandleForWriting.close()
    }
}
