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

    public func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
