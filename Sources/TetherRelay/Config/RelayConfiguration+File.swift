import Foundation
import Logging
import NIOCore
import TetherWire

/// A relay configuration file: YAML with a top-level `role` (`edge` or `hub`). Every key is
/// documented in the README ("Configuration"); an unknown key, a missing one or a bad value is an
/// error naming the file, line, column and key.
public enum RelayConfigurationFile: Sendable {
    case edge(EdgeConfiguration)
    case hub(HubConfiguration)

    /// Where its logs and audit records go.
    public var logging: LoggingConfiguration {
        switch self {
        case .edge(let edge): edge.logging
        case .hub(let hub): hub.logging
        }
    }

    public static func load(path: String) throws(ConfigError) -> RelayConfigurationFile {
        try self.parse(try ConfigError.readText(of: path), file: path)
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> RelayConfigurationFile {
        let root = try ConfigNode.parse(text, file: file)
        guard case .mapping(let mapping) = root.node,
            let role = mapping.first(where: { $0.key.string == "role" })?.value.string
        else {
            throw root.error("missing key \"role\" (edge or hub)")
        }
        switch role {
        case "edge": return .edge(try EdgeConfiguration(root))
        case "hub": return .hub(try HubConfiguration(root))
        default:
            throw ConfigNode(node: mapping["role"]!, path: "role", file: file).error("expected edge or hub")
        }
    }
}

extension RelayTLSFiles {
    init(_ node: ConfigNode) throws(ConfigError) {
        let keys = try node.mapping(["certificate", "key", "ca"])
        let ca = try keys.required("ca")
        let authorities: [String]
        if case .sequence = ca.node {
            authorities = try ca.sequence().map { (entry) throws(ConfigError) in try entry.existingFile() }
        } else {
            authorities = [try ca.existingFile()]
        }
        self.init(
            certificate: try keys.required("certificate").existingFile(), key: try keys.required("key").existingFile(),
            trustedCAs: authorities)
    }
}

extension EdgeConfiguration {
    init(_ root: ConfigNode) throws(ConfigError) {
        let keys = try root.mapping([
            "role", "hubs", "tls", "serverName", "policy", "dial", "forwards", "exposes", "metadata", "logs", "drain", "proxy",
            "admin", "log", "audit",
        ])
        let hubs = try keys.required("hubs").sequence().map { (hub) throws(ConfigError) in try hub.endpoint() }
        guard !hubs.isEmpty else { throw try keys.required("hubs").error("list at least one hub") }
        for (index, hub) in hubs.enumerated() {
            if case .unix = hub { throw try keys.required("hubs").sequence()[index].error("a hub is dialed over TCP") }
        }
        self.init(hubs: hubs, tls: try RelayTLSFiles(try keys.required("tls")), policy: try keys.required("policy").existingFile())
        self.serverName = try keys["serverName"]?.string()
        if let dial = keys["dial"] {
            let dialKeys = try dial.mapping([
                "initialBackoff", "maxBackoff", "resetAfter", "keepalive", "userTimeout", "permanentFailureBackoff", "waitForHub",
                "source",
            ])
            if let value = dialKeys["initialBackoff"] { self.dial.initial = try value.duration(in: .milliseconds(10)...TimeAmount.minutes(5)) }
            if let value = dialKeys["maxBackoff"] { self.dial.maximum = try value.duration(in: .milliseconds(100)...TimeAmount.hours(1)) }
            if let value = dialKeys["resetAfter"] { self.dial.resetAfter = try value.duration(in: .seconds(1)...TimeAmount.hours(24)) }
            if let value = dialKeys["keepalive"] { self.dial.keepalive = try value.duration(in: .seconds(1)...TimeAmount.seconds(30)) }
            if let value = dialKeys["userTimeout"] { self.dial.userTimeout = try value.duration(in: .seconds(1)...TimeAmount.minutes(10)) }
            if let value = dialKeys["permanentFailureBackoff"] {
                self.dial.permanentFailureBackoff = try value.duration(in: .seconds(1)...TimeAmount.hours(24))
            }
            if let value = dialKeys["waitForHub"] { self.dial.waitForHub = try value.duration(in: .zero...TimeAmount.minutes(10)) }
            if let value = dialKeys["source"] {
                let address = try value.string()
                guard (try? SocketAddress(ipAddress: address, port: 0)) != nil else {
                    throw value.error("expected an IP address of this host, such as 10.0.0.5, got \(address)")
                }
                self.dial.source = address
            }
            guard self.dial.initial <= self.dial.maximum else {
                throw dial.error("initialBackoff is longer than maxBackoff")
            }
        }
        if let drain = keys["drain"] {
            let drainKeys = try drain.mapping(["grace"])
            if let value = drainKeys["grace"] { self.drainGrace = try value.duration(in: .seconds(1)...TimeAmount.hours(1)) }
        }
        if let proxy = keys["proxy"] { self.proxy = try ProxySetting(proxy) }
        if let admin = keys["admin"] { self.admin = try AdminConfiguration(admin, defaultPort: 9464, operatorRequired: false) }
        self.logging = try LoggingConfiguration(log: keys["log"], audit: keys["audit"])
        var names = Set<String>()
        for entry in try keys["forwards"]?.sequence() ?? [] {
            let forward = try entry.mapping(["name", "listen", "service", "class"])
            let name = try forward.required("name").string()
            guard names.insert(name).inserted else { throw try forward.required("name").error("a second forward named \(name)") }
            self.forwards.append(
                Forward(
                    name: name, listen: try forward.required("listen").endpoint(),
                    service: try forward.required("service").string(),
                    streamClass: try forward["class"]?.streamClass() ?? .bulk))
        }
        names.removeAll()
        for entry in try keys["exposes"]?.sequence() ?? [] {
            let expose = try entry.mapping(["name", "target"])
            let name = try expose.required("name").string()
            guard names.insert(name).inserted else { throw try expose.required("name").error("a second expose named \(name)") }
            self.exposes.append(Expose(name: name, target: try expose.required("target").endpoint()))
        }
        names.removeAll()
        for entry in try keys["metadata"]?.sequence() ?? [] {
            let listener = try entry.mapping(["name", "listen", "service", "maxLine"])
            let name = try listener.required("name").string()
            guard names.insert(name).inserted else { throw try listener.required("name").error("a second metadata listener named \(name)") }
            var metadata = MetadataListener(
                name: name, listen: try listener.required("listen").endpoint(), service: try listener.required("service").string())
            if let value = listener["maxLine"] { metadata.maxLine = try value.int(in: 64...(64 << 20)) }
            self.metadata.append(metadata)
        }
        names.removeAll()
        for entry in try keys["logs"]?.sequence() ?? [] {
            let source = try entry.mapping(["name", "path"])
            let name = try source.required("name").string()
            guard names.insert(name).inserted else { throw try source.required("name").error("a second log source named \(name)") }
            let pathNode = try source.required("path")
            let path = try pathNode.string()
            guard path.hasPrefix("/"), !path.hasSuffix("/") else { throw pathNode.error("expected the absolute path of a file") }
            guard !(path as NSString).deletingLastPathComponent.contains(where: { "*?[".contains($0) }) else {
                throw pathNode.error("a glob may only be the file's name, in one directory")
            }
            self.logs.append(LogSource(name: name, path: path))
        }
    }
}

extension EdgeConfiguration.ProxySetting {
    /// `proxy: none`, or `{url, noProxy, user, passwordFile, tokenFile}`. Secrets live in files
    /// (read again on every dial), never in the configuration.
    init(_ node: ConfigNode) throws(ConfigError) {
        if case .scalar = node.node {
            guard try node.string() == "none" else { throw node.error("expected none, or a mapping with url") }
            self = .none
            return
        }
        let keys = try node.mapping(["url", "noProxy", "user", "passwordFile", "tokenFile"])
        let url = try keys.required("url")
        let text = try url.string()
        guard !text.contains("@") else { throw url.error("credentials go in user and passwordFile, not in the URL") }
        let noProxy = try keys["noProxy"]?.sequence().map { (entry) throws(ConfigError) in try entry.string() } ?? []
        var proxy: EgressProxy
        do {
            proxy = try EgressProxy(url: text, noProxy: NoProxy(noProxy.joined(separator: ",")))
        } catch {
            throw url.error(error.description)
        }
        switch (keys["user"], keys["passwordFile"], keys["tokenFile"]) {
        case (nil, nil, nil):
            break
        case (let user?, let password?, nil):
            proxy.credentials = .basic(user: try user.string(), password: .file(try password.existingFile()))
        case (nil, nil, let token?):
            proxy.credentials = .bearer(token: .file(try token.existingFile()))
        default:
            throw node.error("credentials are user with passwordFile (Basic), or tokenFile (Bearer)")
        }
        self = .configured(proxy)
    }
}

extension HubConfiguration {
    init(_ root: ConfigNode) throws(ConfigError) {
        let keys = try root.mapping([
            "role", "listen", "tls", "revoked", "limits", "drain", "services", "listeners", "admin", "frontDoor", "log", "audit",
            "access", "latestMetadata",
        ])
        self.init(listen: try keys.required("listen").endpoint(), tls: try RelayTLSFiles(try keys.required("tls")))
        self.revoked = try keys["revoked"]?.existingFile()
        if let limits = keys["limits"] {
            let limitKeys = try limits.mapping(["connectionsPerIdentity", "handshakesPerSecond", "windowMemoryPerIdentity"])
            if let value = limitKeys["connectionsPerIdentity"] { self.limits.connectionsPerIdentity = try value.int(in: 1...64) }
            if let value = limitKeys["handshakesPerSecond"] { self.limits.handshakesPerSecond = try value.int(in: 1...100_000) }
            if let value = limitKeys["windowMemoryPerIdentity"] {
                self.limits.windowMemoryPerIdentity = try value.size(in: (1 << 20)...(1 << 36))
            }
        }
        if let drain = keys["drain"] {
            let drainKeys = try drain.mapping(["grace", "redialWindow"])
            if let value = drainKeys["grace"] { self.drain.grace = try value.duration(in: .seconds(1)...TimeAmount.hours(1)) }
            if let value = drainKeys["redialWindow"] {
                self.drain.redialWindow = try value.duration(in: .zero...TimeAmount.milliseconds(Int64(Settings.maxRedialWindowMilliseconds)))
            }
        }
        if let admin = keys["admin"] { self.admin = try AdminConfiguration(admin, defaultPort: 9465, operatorRequired: true) }
        if let frontDoor = keys["frontDoor"] { self.frontDoor = try FrontDoorConfiguration(frontDoor) }
        if let latest = keys["latestMetadata"] {
            let latestKeys = try latest.mapping(["maxDocument", "maxTotal"])
            if let value = latestKeys["maxDocument"] { self.latestMetadata.maxDocument = try value.size(in: 0...(64 << 20)) }
            if let value = latestKeys["maxTotal"] { self.latestMetadata.maxTotal = try value.size(in: 0...(16 << 30)) }
        }
        self.logging = try LoggingConfiguration(log: keys["log"], audit: keys["audit"])
        if let access = keys["access"] {
            self.logging.accessFile = try LoggingConfiguration.logFile(try access.mapping(["file"]).required("file"))
        }
        var names = Set<String>()
        for entry in try keys["services"]?.sequence() ?? [] {
            let service = try entry.mapping(["name", "backend", "tenants", "proxyProtocol"])
            let name = try service.required("name").string()
            guard names.insert(name).inserted else { throw try service.required("name").error("a second service named \(name)") }
            let tenants = try service.required("tenants").sequence().map { (tenant) throws(ConfigError) in try tenant.string() }
            guard !tenants.isEmpty else { throw try service.required("tenants").error("list the tenants that may open it, or *") }
            var configured = Service(name: name, backend: try service.required("backend").endpoint(), tenants: tenants)
            if let value = service["proxyProtocol"] { configured.proxyProtocol = try value.bool() }
            self.services.append(configured)
        }
        names.removeAll()
        for entry in try keys["listeners"]?.sequence() ?? [] {
            let listener = try entry.mapping(["name", "listen", "agent", "target"])
            let name = try listener.required("name").string()
            guard name != HubRelay.frontDoorName else { throw try listener.required("name").error("\(name) is the front door's") }
            guard names.insert(name).inserted else { throw try listener.required("name").error("a second listener named \(name)") }
            let agentNode = try listener.required("agent")
            guard let agent = TetherIdentity(uri: try agentNode.string()) else {
                throw agentNode.error("expected an identity such as tether://acme/node-1")
            }
            self.listeners.append(
                Listener(
                    name: name, listen: try listener.required("listen").endpoint(), agent: agent,
                    target: try listener.required("target").string()))
        }
    }
}

extension AdminConfiguration {
    /// `{listen, operators: [{id, sha256}]}`; `listen` defaults to 127.0.0.1 and `defaultPort`.
    /// Off loopback, or on the hub, an operator token is required.
    init(_ node: ConfigNode, defaultPort: Int, operatorRequired: Bool) throws(ConfigError) {
        let keys = try node.mapping(["listen", "operators"])
        self.init(listen: try keys["listen"]?.endpoint() ?? .tcp(host: "127.0.0.1", port: defaultPort))
        var ids = Set<String>()
        for entry in try keys["operators"]?.sequence() ?? [] {
            let token = try entry.mapping(["id", "sha256"])
            let (id, sha256) = try Self.token(token, named: "operator token", in: &ids)
            self.operators.append(OperatorToken(id: id, sha256: sha256))
        }
        guard self.operators.isEmpty else { return }
        if operatorRequired {
            throw node.error("the hub's admin endpoints need an operator token: operators: [{id, sha256}] (tether token)")
        }
        if !self.isLocal {
            throw node.error("an admin listener off loopback needs an operator token: operators: [{id, sha256}] (tether token)")
        }
    }

    /// A token entry's `id`, unique among `ids`, and its `sha256` (what `tether token` prints).
    static func token(_ token: ConfigMapping, named kind: String, in ids: inout Set<String>) throws(ConfigError) -> (String, [UInt8]) {
        let id = try token.required("id").string()
        guard ids.insert(id).inserted else { throw try token.required("id").error("a second \(kind) named \(id)") }
        let digest = try token.required("sha256")
        guard let sha256 = Self.hexadecimal(try digest.string()), sha256.count == 32 else {
            throw digest.error("expected the token's SHA-256 as 64 hexadecimal digits (tether token prints it)")
        }
        return (id, sha256)
    }

    static func hexadecimal(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

extension LoggingConfiguration {
    /// `log: {format: json|text, level: trace…critical}` and `audit: {file: PATH}`; the audit
    /// file's directory must exist (the file is created).
    init(log: ConfigNode?, audit: ConfigNode?) throws(ConfigError) {
        self.init()
        if let log {
            let keys = try log.mapping(["format", "level"])
            if let node = keys["format"] {
                guard let format = Format(rawValue: try node.string()) else { throw node.error("expected json or text") }
                self.format = format
            }
            if let node = keys["level"] {
                guard let level = Logger.Level(rawValue: try node.string()) else {
                    throw node.error("expected trace, debug, info, notice, warning, error or critical")
                }
                self.level = level
            }
        }
        if let audit {
            let keys = try audit.mapping(["file"])
            if let node = keys["file"] { self.auditFile = try Self.logFile(node) }
        }
    }

    /// A file records are appended to: relative to the configuration file, in a directory that exists.
    static func logFile(_ node: ConfigNode) throws(ConfigError) -> String {
        var path = try node.string()
        if !path.hasPrefix("/") {
            path = URL(fileURLWithPath: node.file).deletingLastPathComponent().appendingPathComponent(path).path
        }
        var isDirectory: ObjCBool = false
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw node.error("no directory \(directory) for the file")
        }
        return path
    }
}

extension FrontDoorConfiguration {
    /// `{listen, tls: {certificate, key}, zone, answerTimeout, tokens: [{id, tenant, user, sha256}]}`
    /// (README "Front door").
    init(_ node: ConfigNode) throws(ConfigError) {
        let keys = try node.mapping(["listen", "tls", "zone", "answerTimeout", "tokens"])
        let tls = try keys.required("tls").mapping(["certificate", "key"])
        let zoneNode = try keys.required("zone")
        let zone = try zoneNode.string().lowercased()
        guard !zone.isEmpty, zone.split(separator: ".", omittingEmptySubsequences: false).allSatisfy({ !$0.isEmpty && $0.count <= 63 })
        else { throw zoneNode.error("expected a DNS name such as agents.plane.example") }
        self.init(
            listen: try keys.required("listen").endpoint(), certificate: try tls.required("certificate").existingFile(),
            key: try tls.required("key").existingFile(), zone: zone)
        if let value = keys["answerTimeout"] { self.answerTimeout = try value.duration(in: .seconds(1)...TimeAmount.minutes(5)) }
        var ids = Set<String>()
        for entry in try keys["tokens"]?.sequence() ?? [] {
            let token = try entry.mapping(["id", "tenant", "user", "sha256"])
            let (id, sha256) = try AdminConfiguration.token(token, named: "token", in: &ids)
            let tenantNode = try token.required("tenant")
            let tenant = try tenantNode.string()
            guard TetherIdentity.isValidTenant(tenant) else { throw tenantNode.error("expected a tenant such as acme") }
            self.tokens.append(PlaneToken(id: id, tenant: tenant, user: try token.required("user").string(), sha256: sha256))
        }
        guard !self.tokens.isEmpty else { throw node.error("the front door needs tokens: [{id, tenant, user, sha256}] (tether token)") }
    }
}
