import Foundation
import Testing

@testable import TetherPolicy

/// spec/POLICY.md §2–§3, §6: the file, the stream rules and OPEN metadata.
@Suite struct PolicyTests {
    static let example = """
        version: 1
        limits:
          maxMessageBytes: 65536
        toPlane:
          - name: inventory
            service: inventory
            class: metadata
            fields: [node.name, "node.labels.*", "pods[].name"]
            openMetadata: [agent-version]
          - service: logs/*
            class: logs
            opaque: true
        fromPlane:
          - service: exec
            class: [command, bulk]
            opaque: true
            openMetadata: ["*"]
        """

    @Test func theExampleFileDecides() throws {
        let policy = try PolicyFile.parse(Self.example)
        #expect(policy.maxMessageBytes == 65_536)
        guard case .allowed(let inventory) = policy.decide(.toPlane, service: "inventory", class: .metadata) else {
            Issue.record("inventory is allowed")
            return
        }
        #expect(inventory.name == "inventory")
        #expect(inventory.fields?.maxBytes == 65_536)
        guard case .allowed(let logs) = policy.decide(.toPlane, service: "logs/kubelet", class: .logs) else {
            Issue.record("logs/* is allowed")
            return
        }
        #expect(logs.isOpaque)
        #expect(logs.name == "toPlane[1] logs/*")
        guard case .refused(let rule, let reason) = policy.decide(.toPlane, service: "inventory", class: .bulk) else {
            Issue.record("inventory as BULK is refused")
            return
        }
        #expect(rule == "inventory")
        #expect(reason == "class-not-allowed")
        guard case .refused(let rule, let reason) = policy.decide(.toPlane, service: "exec", class: .command) else {
            Issue.record("exec is only allowed from the plane")
            return
        }
        #expect(rule == Policy.defaultDeny)
        #expect(reason == "no-rule")
        guard case .allowed = policy.decide(.fromPlane, service: "exec", class: .bulk) else {
            Issue.record("exec as BULK from the plane is allowed")
            return
        }
        guard case .refused = policy.decide(.fromPlane, service: "logs/kubelet", class: .logs) else {
            Issue.record("directions are separate")
            return
        }
    }

    @Test func nothingIsAllowedByDefault() {
        for direction in [PolicyDirection.toPlane, .fromPlane] {
            for streamClass in PolicyClass.allCases {
                guard case .refused(Policy.defaultDeny, "no-rule") = Policy.denyAll.decide(direction, service: "x", class: streamClass)
                else {
                    Issue.record("\(direction) \(streamClass) must be refused")
                    continue
                }
            }
        }
    }

    @Test func openMetadataKeysPassOnlyWhenAllowedWhole() throws {
        let policy = try PolicyFile.parse(Self.example)
        #expect(policy.toPlane[0].allowsOpenMetadata(key: "agent-version"))
        #expect(!policy.toPlane[0].allowsOpenMetadata(key: "hostname"))
        #expect(!policy.toPlane[1].allowsOpenMetadata(key: "agent-version"), "none listed: none pass")
        #expect(policy.fromPlane[0].allowsOpenMetadata(key: "anything"))
        #expect(!policy.fromPlane[0].allowsOpenMetadata(key: "with.dot"))
        let nested = try PolicyRule(
            name: "n", service: ServicePattern("s"), classes: [.command], opaque: true, fields: nil,
            openMetadata: [FieldPattern("a.b")])
        #expect(!nested.allowsOpenMetadata(key: "a"), "a value is opaque: nothing below it can be kept")
    }

    @Test func servicePatterns() throws {
        #expect(try ServicePattern("logs/*").matches("logs/"))
        #expect(try ServicePattern("logs/*").matches("logs/a/b"))
        #expect(try !ServicePattern("logs/*").matches("log"))
        #expect(try ServicePattern("*").matches("anything"))
        #expect(try !ServicePattern("exec").matches("exec2"))
        #expect(throws: PolicyError.self) { try ServicePattern("a*b") }
        #expect(throws: PolicyError.self) { try ServicePattern("") }
    }

    @Test(arguments: [
        ("version: 2\n", "version 2"),
        ("toPlane: []\n", "version"),
        ("version: 1\ntoplane: []\n", "toplane: unknown key"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: metadata\n    feilds: [a]\n", "toPlane[0].feilds: unknown key"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: metadata\n", "toPlane[0]: toPlane[0] s: a METADATA rule needs `fields`"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: logs\n", "say `opaque: true`"),
        ("version: 1\nfromPlane:\n  - service: s\n    class: [metadata, logs]\n    fields: []\n", "separate rules"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: metadata\n    opaque: true\n    fields: []\n", "always filtered"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: bulk\n    opaque: true\n    fields: [a]\n", "METADATA rules only"),
        ("version: 1\ntoPlane:\n  - service: s\n    class: video\n", "toPlane[0].class: unknown class \"video\""),
        ("version: 1\ntoPlane:\n  - service: s\n    class: metadata\n    fields: [\"a..b\"]\n", "empty segment"),
        ("version: 1\ntoPlane:\n  - class: logs\n    opaque: true\n", "toPlane[0].service: missing"),
        ("version: 1\nlimits:\n  maxMessageBytes: 0\n", "maxMessageBytes"),
        ("version: [\n", "not a policy"),
    ])
    func aPolicyThatCannotBeEnforcedIsAnErrorThatSaysWhere(_ text: String, _ expected: String) {
        do {
            _ = try PolicyFile.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.description.contains(expected), "\(error.description)")
        }
    }

    @Test func loadingAFileNamesIt() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(getpid()).yaml").path
        #expect(throws: PolicyError.self) { try PolicyFile.load(path: path) }
        try Self.example.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try PolicyFile.load(path: path).toPlane.count == 2)
        try "version: 3\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try PolicyFile.load(path: path)
        } catch {
            #expect(error.description.hasPrefix(path))
        }
    }
}
