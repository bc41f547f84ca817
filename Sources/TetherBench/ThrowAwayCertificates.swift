import Foundation
import TetherTLS
import TetherWire

/// Throw-away certificates for the demo and the benchmark, in a temporary directory.
public struct ThrowAwayCertificates: Sendable {
    public let directory: String
    public let identity = TetherIdentity(tenant: "demo", agentID: "node-1")!

    public init() throws {
        self.directory = NSTemporaryDirectory() + "tether-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let authority = try CertificateAuthority(commonName: "Tether throw-away CA")
        try authority.issued.write(certificateTo: self.directory + "/ca.pem", keyTo: self.directory + "/ca.key")
        try authority.issue(.hub(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
            .write(certificateTo: self.directory + "/hub.pem", keyTo: self.directory + "/hub.key")
        try authority.issue(.edge(self.identity))
            .write(certificateTo: self.directory + "/edge.pem", keyTo: self.directory + "/edge.key")
    }

    /// Issues an edge certificate for `identity` under the same CA, as `<name>.pem` and `<name>.key`
    /// in the directory (a second node, another tenant's).
    public func issueEdge(_ identity: TetherIdentity, named name: String) throws {
        let authority = try CertificateAuthority(certificateFile: self.directory + "/ca.pem", keyFile: self.directory + "/ca.key")
        try authority.issue(.edge(identity)).write(certificateTo: self.directory + "/\(name).pem", keyTo: self.directory + "/\(name).key")
    }

    /// Reads certificates another process made in `directory`.
    public init(directory: String) {
        self.directory = directory
    }

    public var hub: TLSConfiguration {
        TLSConfiguration(
            role: .server, certificateChainFile: self.directory + "/hub.pem", privateKeyFile: self.directory + "/hub.key",
            trustedCAFiles: [self.directory + "/ca.pem"])
    }

    public var edge: TLSConfiguration {
        TLSConfiguration(
            role: .client, certificateChainFile: self.directory + "/edge.pem", privateKeyFile: self.directory + "/edge.key",
            trustedCAFiles: [self.directory + "/ca.pem"], serverName: "127.0.0.1")
    }

    /// Deletes the directory. When `TETHER_KEEP_LOGS` names a directory, the relays' logs and
    /// audit files (`*.log`, `*.jsonl`) are first copied there, named after this directory, so CI
    /// can search every log line of a run for secrets (README "Logs and audit").
    public func remove() {
        if let keep = ProcessInfo.processInfo.environment["TETHER_KEEP_LOGS"], !keep.isEmpty {
            let name = (self.directory as NSString).lastPathComponent
            for file in (try? FileManager.default.contentsOfDirectory(atPath: self.directory)) ?? []
            where file.hasSuffix(".log") || file.hasSuffix(".jsonl") {
                try? FileManager.default.copyItem(atPath: self.directory + "/" + file, toPath: keep + "/\(name)-\(file)")
            }
        }
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
