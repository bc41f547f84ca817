import Foundation
import TetherBench
import Testing

/// What `dist/` ships (README "Example configurations and alerts"): the example configurations
/// pass `tether check-config`, and the Prometheus alert rules pass `promtool check rules` and
/// their own unit tests (`promtool test rules`), and name only metrics the relays export.
struct DistributionTests {
    static let dist = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("dist")

    static var tether: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("tether").path
    }

    /// As installed: the files of `dist/config/` in one directory beside the certificates they name.
    @Test func theExampleConfigurationsAreValid() async throws {
        let certificates = try ThrowAwayCertificates()
        defer { certificates.remove() }
        let config = Self.dist.appendingPathComponent("config")
        for file in try FileManager.default.contentsOfDirectory(atPath: config.path) {
            // systemd makes /var/log/tether (LogsDirectory= in dist/systemd); here the test's directory stands in.
            let text = try String(contentsOf: config.appendingPathComponent(file), encoding: .utf8)
                .replacingOccurrences(of: "/var/log/tether", with: certificates.directory)
            try text.write(toFile: certificates.directory + "/" + file, atomically: true, encoding: .utf8)
        }
        for file in ["edge.yaml", "hub.yaml"] {
            let check = try await Program.run([Self.tether, "check-config", certificates.directory + "/" + file])
            #expect(check.status == 0, "\(file): \(check.output)\(check.errors)")
        }
    }

    @Test func theAlertRulesCheckAndPassTheirTests() async throws {
        let rules = Self.dist.appendingPathComponent("prometheus")
        let check = try await Program.run(["promtool", "check", "rules", rules.appendingPathComponent("tether-alerts.yml").path])
        #expect(check.status == 0, "\(check.output)\(check.errors)")
        let test = try await Program.run(["promtool", "test", "rules", rules.appendingPathComponent("tether-alerts.test.yml").path])
        #expect(test.status == 0, "\(test.output)\(test.errors)")
    }

    /// A renamed metric would leave an alert that never fires: every `tether_` name in the rules is
    /// in the README's metrics table and registered somewhere in `Sources/`.
    @Test func theAlertsNameOnlyExportedMetrics() throws {
        let root = Self.dist.deletingLastPathComponent()
        let rules = try String(contentsOf: Self.dist.appendingPathComponent("prometheus/tether-alerts.yml"), encoding: .utf8)
        let named = Set(rules.matches(of: /tether_[a-z_]+/).map { String($0.output) })
        #expect(named.count >= 5, "\(named)")
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        var sources = ""
        let enumerator = FileManager.default.enumerator(at: root.appendingPathComponent("Sources"), includingPropertiesForKeys: nil)
        while let file = enumerator?.nextObject() as? URL {
            if file.pathExtension == "swift" { sources += try String(contentsOf: file, encoding: .utf8) }
        }
        for metric in named {
            #expect(readme.contains("`\(metric)`"), "\(metric) is not in the README's metrics table")
            #expect(sources.contains("\"\(metric)\""), "\(metric) is registered nowhere in Sources/")
        }
    }
}
