import ArgumentParser
import Foundation
import TetherTLS
import TetherWire

/// `tether certs`: a throw-away CA, a hub certificate and edge certificates with their identity
/// SANs (spec §2.2), made with OpenSSL's API.
struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a throw-away CA, a hub certificate and edge certificates (PEM files).",
        discussion: """
            Files go to --out: ca.pem/ca.key, hub.pem/hub.key, and edge-<tenant>-<agent>.pem/.key per --edge.
            An existing ca.pem/ca.key there is reused, so more edges can be added later. Keys are ECDSA P-256.
            """)

    @Option(help: "Directory for the PEM files (created if missing).")
    var out: String = "tether-certs"

    @Option(name: .customLong("hub-name"), help: "DNS name edges dial (repeatable).")
    var hubNames: [String] = ["localhost"]

    @Option(name: .customLong("hub-ip"), help: "IP address edges dial (repeatable).")
    var hubIPs: [String] = ["127.0.0.1"]

    @Option(name: .customLong("edge"), help: "An edge identity, <tenant>/<agent-id> (repeatable).")
    var edges: [String] = ["demo/node-1"]

    @Option(help: "Days the certificates stay valid.")
    var days: Int = 397

    @Flag(help: "Make a new CA even if one exists in --out.")
    var newCA = false

    func run() throws {
        let identities = try self.edges.map { text -> TetherIdentity in
            let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2, let identity = TetherIdentity(tenant: parts[0], agentID: parts[1]) else {
                throw ValidationError(
                    "--edge \(text): expected <tenant>/<agent-id>, tenant [a-z0-9-]{1,63}, agent id [A-Za-z0-9._-]{1,128}")
            }
            return identity
        }
        try FileManager.default.createDirectory(atPath: self.out, withIntermediateDirectories: true)
        let caFile = self.out + "/ca.pem"
        let caKey = self.out + "/ca.key"
        let authority: CertificateAuthority
        if !self.newCA && FileManager.default.fileExists(atPath: caFile) && FileManager.default.fileExists(atPath: caKey) {
            authority = try CertificateAuthority(certificateFile: caFile, keyFile: caKey)
            print("reusing the CA in \(caFile)")
        } else {
            authority = try CertificateAuthority(commonName: "Tether throw-away CA")
            try authority.issued.write(certificateTo: caFile, keyTo: caKey)
            print("wrote \(caFile) and \(caKey)")
        }
        var hub = CertificateAuthority.Request.hub(dnsNames: self.hubNames, ipAddresses: self.hubIPs)
        hub.notAfter = self.days * 86_400
        try authority.issue(hub).write(certificateTo: self.out + "/hub.pem", keyTo: self.out + "/hub.key")
        print("wrote \(self.out)/hub.pem for \((self.hubNames + self.hubIPs).joined(separator: ", "))")
        for identity in identities {
            var edge = CertificateAuthority.Request.edge(identity)
            edge.notAfter = self.days * 86_400
            let name = "\(self.out)/edge-\(identity.tenant)-\(identity.agentID)"
            try authority.issue(edge).write(certificateTo: name + ".pem", keyTo: name + ".key")
            print("wrote \(name).pem for \(identity)")
        }
    }
}
