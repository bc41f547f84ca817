import ArgumentParser
import Foundation
import NIOCore
import TetherPolicy

/// `tether bench-policy` (spec/POLICY.md §5): the METADATA filter on generated node-inventory
/// documents (about 10 KB, hundreds of fields, nested arrays), with a typical allowlist and with
/// `**`, against Foundation's JSON parser on the same octets in the same run.
struct BenchPolicy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "METADATA filtering MB/s on node-inventory JSON, against Foundation's JSON parser.")

    @Option(help: "Distinct documents to generate.")
    var documents: Int = 1_000

    @Option(help: "Seconds per row.")
    var seconds: Double = 2

    @Flag(help: "Print the figures as one JSON object (the lines go to standard error).")
    var json = false

    struct Figures: Encodable {
        var bench = "policy"
        var document_octets: Int
        var allowlist_mb_per_s: Double
        var validate_mb_per_s: Double
        var foundation_parse_mb_per_s: Double
    }

    static let allowlist = [
        "node.name", "node.labels.*", "node.status.capacity.*", "node.status.allocatable.*",
        "node.status.conditions[].type", "node.status.conditions[].status", "node.status.nodeInfo.*",
        "node.status.images[].names", "pods[].name", "pods[].namespace", "pods[].status.phase",
        "pods[].containers[].name", "pods[].containers[].image", "pods[].containers[].resources.**",
    ]

    func run() async throws {
        guard self.documents > 0, self.seconds > 0 else { throw ValidationError("--documents and --seconds must be positive") }
        let output = BenchOutput(json: self.json)
        let corpus = (0..<self.documents).map { Array(Self.inventory(seed: $0).utf8) }
        let octets = corpus.reduce(0) { $0 + $1.count }
        let fields = Self.countFields(corpus[0])
        output.say(
            "\(corpus.count) node-inventory documents, \(octets / corpus.count) octets each on average; document 0 has \(fields) fields")
        let filter = JSONFilter(allowing: try Self.allowlist.map(FieldPattern.init))
        var kept = 0
        var removed = 0
        for document in corpus {
            let (output, gone) = try filter.filter(document)
            kept += output.count
            removed += gone.count
        }
        output.say(
            String(
                format: "allowlist of %d patterns keeps %.0f %% of the octets, removes %d members per document",
                Self.allowlist.count, 100 * Double(kept) / Double(octets), removed / corpus.count))

        var filtered: [UInt8] = []
        filtered.reserveCapacity(1 << 16)
        let allowlisted = try self.measure(octets: octets) {
            for document in corpus {
                filtered.removeAll(keepingCapacity: true)
                _ = try document.withUnsafeBytes { try filter.filter($0, into: &filtered) }
            }
        }
        let everything = JSONFilter(allowing: [try FieldPattern("**")])
        let validated = try self.measure(octets: octets) {
            for document in corpus {
                filtered.removeAll(keepingCapacity: true)
                _ = try document.withUnsafeBytes { try everything.filter($0, into: &filtered) }
            }
        }
        let datas = corpus.map { Data($0) }
        let foundation = try self.measure(octets: octets) {
            for data in datas { _ = try JSONSerialization.jsonObject(with: data) }
        }
        output.say(String(format: "filter, allowlist:                  %7.1f MB/s per core", allowlisted))
        output.say(String(format: "filter, `**` (validate and copy):   %7.1f MB/s per core", validated))
        output.say(String(format: "Foundation JSONSerialization parse: %7.1f MB/s per core (reference, same octets)", foundation))
        output.say(String(format: "filter / Foundation parse: %.1f×", allowlisted / foundation))
        output.record(
            Figures(
                document_octets: octets / corpus.count, allowlist_mb_per_s: allowlisted, validate_mb_per_s: validated,
                foundation_parse_mb_per_s: foundation))
    }

    /// MB/s of `round` (one pass over `octets` octets), repeated for `seconds` on this thread.
    private func measure(octets: Int, _ round: () throws -> Void) rethrows -> Double {
        let start = NIODeadline.now()
        var rounds = 0
        repeat {
            try round()
            rounds += 1
        } while Double((NIODeadline.now() - start).nanoseconds) < self.seconds * 1e9
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return Double(octets * rounds) / 1e6 / elapsed
    }

    static func countFields(_ document: [UInt8]) -> Int {
        // Every member is a key followed by a colon outside strings; the generator writes none inside.
        document.reduce(0) { $0 + ($1 == UInt8(ascii: ":") ? 1 : 0) }
    }

    /// A node's inventory as an agent would report it: labels, annotations, capacity, conditions,
    /// images, and the pods with their containers, resources, env and ports.
    static func inventory(seed: Int) -> String {
        var random = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15 | 1
        func next(_ bound: Int) -> Int {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return Int(random % UInt64(bound))
        }
        func hex(_ count: Int) -> String { String((0..<count).map { _ in Character(String(next(16), radix: 16)) }) }
        func object(_ members: [(String, String)]) -> String {
            "{" + members.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
        }
        func string(_ text: String) -> String { "\"\(text)\"" }
        let node = "node-\(seed)"
        let labels = object(
            [
                ("kubernetes.io/hostname", string(node)), ("topology.kubernetes.io/zone", string("eu-west-1\(["a", "b", "c"][next(3)])")),
                ("node.kubernetes.io/instance-type", string("m5.\(["large", "xlarge", "2xlarge"][next(3)])")),
                ("kubernetes.io/os", string("linux")), ("kubernetes.io/arch", string("amd64")),
            ].map { ($0.0.replacingOccurrences(of: ".", with: "_"), $0.1) }
                + (0..<12).map { ("team-\($0)", string("value-\(next(1000))")) })
        let annotations = object(
            (0..<8).map { ("annotation-\($0)", string("sha256:" + hex(64))) })
        let capacity = object([
            ("cpu", string("\(2 << next(4))")), ("memory", string("\(8 << next(4))Gi")), ("pods", string("110")),
            ("ephemeral-storage", string("\(100 + next(400))Gi")), ("hugepages-2Mi", string("0")),
        ])
        let conditions =
            "["
            + ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"].map { type in
                object([
                    ("type", string(type)), ("status", string(type == "Ready" ? "True" : "False")),
                    ("lastHeartbeatTime", string("2026-11-27T0\(next(10)):\(10 + next(50)):00Z")),
                    ("reason", string("Kubelet\(type)")), ("message", string("kubelet reports \(type) for \(node)")),
                ])
            }.joined(separator: ", ") + "]"
        let images =
            "["
            + (0..<10).map { index in
                object([
                    ("names", "[\(string("registry.example.com/app-\(index)@sha256:" + hex(64))), \(string("registry.example.com/app-\(index):v\(next(20))"))]"),
                    ("sizeBytes", "\(10_000_000 + next(500_000_000))"),
                ])
            }.joined(separator: ", ") + "]"
        let nodeInfo = object([
            ("machineID", string(hex(32))), ("systemUUID", string(hex(32))), ("bootID", string(hex(32))),
            ("kernelVersion", string("6.1.0-\(next(30))-amd64")), ("osImage", string("Debian GNU/Linux 12 (bookworm)")),
            ("containerRuntimeVersion", string("containerd://1.7.\(next(20))")), ("kubeletVersion", string("v1.31.\(next(5))")),
            ("architecture", string("amd64")), ("operatingSystem", string("linux")),
        ])
        let pods =
            "["
            + (0..<6).map { index in
                let containers =
                    "["
                    + (0..<2).map { container in
                        object([
                            ("name", string("c\(container)")), ("image", string("registry.example.com/app-\(index):v\(next(20))")),
                            (
                                "resources",
                                object([
                                    ("requests", object([("cpu", string("\(100 * (1 + next(9)))m")), ("memory", string("\(64 << next(4))Mi"))])),
                                    ("limits", object([("cpu", string("\(1 + next(3))")), ("memory", string("\(256 << next(3))Mi"))])),
                                ])
                            ),
                            ("env", "[" + (0..<3).map { object([("name", string("VAR_\($0)")), ("value", string(hex(16)))]) }.joined(separator: ", ") + "]"),
                            ("ports", "[\(object([("containerPort", "\(8000 + next(1000))"), ("protocol", string("TCP"))]))]"),
                        ])
                    }.joined(separator: ", ") + "]"
                return object([
                    ("name", string("app-\(index)-\(hex(5))")), ("namespace", string(["default", "kube-system", "prod"][next(3)])),
                    ("uid", string(hex(32))), ("labels", object([("app", string("app-\(index)")), ("pod-template-hash", string(hex(10)))])),
                    ("containers", containers),
                    ("status", object([("phase", string("Running")), ("podIP", string("10.0.\(next(256)).\(next(256))")), ("startTime", string("2026-11-2\(next(8))T00:00:00Z"))])),
                ])
            }.joined(separator: ", ") + "]"
        return object([
            ("apiVersion", string("v1")), ("kind", string("NodeInventory")),
            (
                "node",
                object([
                    ("name", string(node)), ("uid", string(hex(32))), ("labels", labels), ("annotations", annotations),
                    (
                        "status",
                        object([
                            ("capacity", capacity), ("allocatable", capacity), ("conditions", conditions), ("images", images),
                            ("nodeInfo", nodeInfo),
                            ("addresses", "[\(object([("type", string("InternalIP")), ("address", string("10.1.\(next(256)).\(next(256))"))]))]"),
                        ])
                    ),
                ])
            ),
            ("pods", pods),
        ])
    }
}
