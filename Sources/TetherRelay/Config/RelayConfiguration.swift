import Foundation
import Logging
import NIOCore
import TetherTLS
import TetherWire

/// The certificate, key and trusted CAs of a relay (spec §2: mutual TLS 1.3).
public struct RelayTLSFiles: Sendable, Hashable {
    public var certificate: String
    public var key: String
    public var trustedCAs: [String]

    public init(certificate: String, key: String, trustedCAs: [String]) {
        self.certificate = certificate
        self.key = key
        self.trustedCAs = trustedCAs
    }
}

/// `tether edge`'s configuration (README "Configuration"): the hubs it dials, the local
/// listeners it forwards, the local targets the plane may open, and the policy that allows them.
public struct EdgeConfiguration: Sendable {
    /// Hub addresses, tried in turn; names are resolved again on every attempt.
    public var hubs: [Endpoint]
    public var tls: RelayTLSFiles
    /// The name the hub's certificate must carry; nil verifies each hub's own host.
    public var serverName: String?
    /// The customer's allowlist (spec/POLICY.md); every forward and expose needs a rule in it.
    public var policy: String
    public var dial = Dial()
    public var forwards: [Forward] = []
    public var exposes: [Expose] = []
    public var metadata: [MetadataListener] = []
    /// Log files the plane may follow over LOGS streams (spec/LOGS.md), each needing a `fromPlane`
    /// rule of class `logs` in the policy.
    public var logs: [LogSource] = []
    /// After SIGTERM's GOAWAY (spec §10.2), how long open streams may run before they are cut.
    public var drainGrace: TimeAmount = .seconds(30)
    /// The HTTP CONNECT proxy on the way to the hubs.
    public var proxy: ProxySetting = .environment
    /// Health, readiness, metrics and state over HTTP; nil serves none.
    public var admin: AdminConfiguration?
    public var logging = LoggingConfiguration()

    public enum ProxySetting: Sendable, Equatable {
        /// `HTTPS_PROXY` and `NO_PROXY` from the relay's environment, read at start.
        case environment
        /// No proxy, whatever the environment says.
        case none
        case configured(EgressProxy)
    }

    public struct Dial: Sendable, Equatable {
        /// Full-jitter exponential backoff between `initial` and `maximum`, back to `initial` after
        /// a connection stayed up for `resetAfter`.
        public var initial: TimeAmount = .milliseconds(250)
        public var maximum: TimeAmount = .seconds(30)
        public var resetAfter: TimeAmount = .seconds(60)
        /// Keepalive PINGs at most this far apart (spec §5.6: 1–30 s; NAT timeouts).
        public var keepalive: TimeAmount = .seconds(15)
        /// `TCP_USER_TIMEOUT`: a connection whose sent data stays unacknowledged this long is dead.
        public var userTimeout: TimeAmount = .seconds(45)
        /// The wait (half of it to all of it) after a failure dialing again cannot fix: an unknown
        /// CA, an expired certificate, a revoked identity.
        public var permanentFailureBackoff: TimeAmount = .seconds(120)
        /// A forwarded connection accepted while no connection to a hub is up waits this long
        /// for one, then is closed.
        public var waitForHub: TimeAmount = .seconds(10)
        /// The local IP address connections to the hubs leave from (a multi-homed node whose
        /// firewall allows one); nil lets the system choose.
        public var source: String?

        public init() {}
    }

    /// A local listener whose connections become streams to a hub service.
    public struct Forward: Sendable {
        public var name: String
        public var listen: Endpoint
        public var service: String
        public var streamClass: StreamClass

        public init(name: String, listen: Endpoint, service: String, streamClass: StreamClass) {
            self.name = name
            self.listen = listen
            self.service = service
            self.streamClass = streamClass
        }
    }

    /// A local target the plane may open by name.
    public struct Expose: Sendable {
        public var name: String
        public var target: Endpoint

        public init(name: String, target: Endpoint) {
            self.name = name
            self.target = target
        }
    }

    /// A named log file, or a glob of files in one directory (spec/LOGS.md §1), each followed
    /// across its rotations.
    public struct LogSource: Sendable, Equatable {
        public var name: String
        /// An absolute path; its last component may be a glob (`*`, `?`, `[…]`): a follow then
        /// names one matching file (`logs.file`).
        public var path: String

        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }

        /// Whether the last component is a pattern.
        public var isGlob: Bool { (self.path as NSString).lastPathComponent.contains { "*?[".contains($0) } }

        /// The file a follow reads: the path, or for a glob the `file` it names — a regular file
        /// (never a symbolic link) in the glob's directory whose name matches. Nil otherwise.
        public func file(named file: String?) -> String? {
            guard self.isGlob else { return file == nil ? self.path : nil }
            guard let file, !file.isEmpty, !file.contains("/"), file != ".", file != "..",
                fnmatch((self.path as NSString).lastPathComponent, file, FNM_PERIOD) == 0
            else { return nil }
            let path = (self.path as NSString).deletingLastPathComponent + "/" + file
            var status = stat()
            guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
            return path
        }
    }

    /// A local listener for NDJSON from node agents: each line becomes one METADATA message to a
    /// hub service, through the policy's field filter (README "Metadata").
    public struct MetadataListener: Sendable {
        public var name: String
        public var listen: Endpoint
        public var service: String
        /// The longest line taken, in octets; a longer one is skipped and reported.
        public var maxLine = 1 << 20

        public init(name: String, listen: Endpoint, service: String) {
            self.name = name
            self.listen = listen
            self.service = service
        }
    }

    public init(hubs: [Endpoint], tls: RelayTLSFiles, policy: String) {
        self.hubs = hubs
        self.tls = tls
        self.policy = policy
    }
}

/// `tether hub`'s configuration (README "Configuration"): where edges connect, the backends of
/// the services they open, and the listeners through which the plane opens agents' targets.
public struct HubConfiguration: Sendable {
    public var listen: Endpoint
    public var tls: RelayTLSFiles
    /// A file of revoked identities, one `tether://tenant/agent` per line; nil revokes none.
    public var revoked: String?
    public var limits = Limits()
    public var drain = Drain()
    public var services: [Service] = []
    public var listeners: [Listener] = []
    /// Health, readiness, metrics and state over HTTP; nil serves none.
    public var admin: AdminConfiguration?
    /// The HTTP CONNECT proxy plane programs reach agents' targets through; nil serves none.
    public var frontDoor: FrontDoorConfiguration?
    /// How much of each agent's latest METADATA document the hub keeps for its admin API.
    public var latestMetadata = LatestMetadata()
    public var logging = LoggingConfiguration()

    /// The hub keeps the latest METADATA document of each agent (`GET /v1/agents/{tenant}/{agent}/metadata`,
    /// README "Metadata"), within these bounds: a fleet cannot fill its memory.
    public struct LatestMetadata: Sendable, Equatable {
        /// A longer document is not kept (its size and time are).
        public var maxDocument = 1 << 20
        /// All documents together; past it the least recently updated are forgotten.
        public var maxTotal = 256 << 20

        public init() {}
    }

    public struct Limits: Sendable, Equatable {
        /// Connections one identity may hold at once (a second replaces the first up to this).
        public var connectionsPerIdentity = 2
        /// Full handshakes per second; more wait, so a reconnect storm cannot starve live edges.
        public var handshakesPerSecond = 500
        /// What one identity's connections together may make the hub buffer: their connection
        /// windows, initial and grown (spec §7.4). A connection that finds it spent announces a
        /// 64 KiB window; its octets wait at the edge, not in the hub.
        public var windowMemoryPerIdentity = 64 << 20

        public init() {}
    }

    /// A graceful stop (spec §10.2): GOAWAY to every edge, open streams get `grace` to finish;
    /// edges dial the replacement within `redialWindow` (spec §10.2.1), spread over it.
    public struct Drain: Sendable, Equatable {
        public var grace: TimeAmount = .seconds(30)
        public var redialWindow: TimeAmount = .seconds(5)

        public init() {}
    }

    /// A service edges may open, and the backend its streams are spliced to.
    public struct Service: Sendable {
        public var name: String
        public var backend: Endpoint
        /// Tenants whose edges may open it; `*` allows every tenant.
        public var tenants: [String]
        /// Whether each backend connection starts with a PROXY v2 header naming the stream's
        /// agent, service and class (spec/RELAYS.md §2).
        public var proxyProtocol = true

        public init(name: String, backend: Endpoint, tenants: [String]) {
            self.name = name
            self.backend = backend
            self.tenants = tenants
        }

        public func allows(_ tenant: String) -> Bool { self.tenants.contains("*") || self.tenants.contains(tenant) }
    }

    /// A hub-side listener whose connections become streams the hub opens toward one agent's
    /// exposed target.
    public struct Listener: Sendable {
        public var name: String
        public var listen: Endpoint
        public var agent: TetherIdentity
        public var target: String

        public init(name: String, listen: Endpoint, agent: TetherIdentity, target: String) {
            self.name = name
            self.listen = listen
            self.agent = agent
            self.target = target
        }
    }

    public init(listen: Endpoint, tls: RelayTLSFiles) {
        self.listen = listen
        self.tls = tls
    }
}

/// A relay's admin listener (README "Admin endpoints"): `/healthz`, `/readyz`, `/metrics`,
/// `/v1/state`. Loopback unless configured otherwise.
public struct AdminConfiguration: Sendable, Equatable {
    public var listen: Endpoint
    /// Who may read `/metrics` and `/v1/state` (`Authorization: Bearer <token>`). The hub needs at
    /// least one; an edge with none serves them to anyone who can reach its listener.
    public var operators: [OperatorToken] = []

    /// An operator's token, kept as its SHA-256 (`tether token` makes one). `id` names it in logs.
    public struct OperatorToken: Sendable, Equatable {
        public var id: String
        public var sha256: [UInt8]

        public init(id: String, sha256: [UInt8]) {
            self.id = id
            self.sha256 = sha256
        }
    }

    public init(listen: Endpoint) {
        self.listen = listen
    }

    /// Whether `listen` is reachable only from this machine.
    public var isLocal: Bool {
        switch self.listen {
        case .unix: true
        case .tcp(let host, _): host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }
    }
}

/// Where a relay's logs and audit records go (README "Logs and audit").
public struct LoggingConfiguration: Sendable, Equatable {
    public enum Format: String, Sendable {
        /// One JSON object per line.
        case json
        /// swift-log's `StreamLogHandler` lines, for a person at a terminal.
        case text
    }

    /// The operational log, on standard error.
    public var format = Format.json
    public var level = Logger.Level.info
    /// Audit records (always JSON lines): appended to this file, opened again on SIGHUP; nil
    /// writes them to standard output.
    public var auditFile: String?
    /// The hub front door's access records (JSON lines): appended to this file, opened again on
    /// SIGHUP; nil writes them to standard output.
    public var accessFile: String?

    public init() {}
}
