import NIOCore
import TetherWire

/// Which end of the transport this endpoint is (spec §1, §6.1).
public enum Role: Sendable, Hashable {
    /// Opened the transport; opens odd stream ids.
    case dialer
    /// Accepted the transport; opens even stream ids.
    case acceptor

    /// The first id this role opens (spec §6.1).
    var firstStreamID: UInt32 { self == .dialer ? 1 : 2 }

    /// The highest id this role may use (spec §6.1).
    var lastStreamID: StreamID { self == .dialer ? .maxDialer : .maxAcceptor }

    /// Whether this role opens `id`.
    @inlinable
    func opens(_ id: StreamID) -> Bool { id.isDialerInitiated == (self == .dialer) }
}

/// Everything a ``Session`` needs to know up front. Defaults are the spec's (§3.3, §12).
public struct SessionConfiguration: Sendable {
    public var role: Role
    /// What this endpoint announces in its SETTINGS (spec §3.3).
    public var settings: Settings
    /// Octets a stream may hold unsent before its writer waits (spec §7.2).
    public var sendBufferLimit: Int = 65_536
    /// An inbound stream the application has not accepted by then is reset with TIMEOUT (spec §6.2).
    public var openTimeout: TimeAmount? = .seconds(30)
    /// A stream with no DATA either way for this long is reset with TIMEOUT; off by default (spec §12).
    public var idleTimeout: TimeAmount? = nil
    /// A stream half-closed for this long is reset with TIMEOUT (spec §6.4).
    public var halfCloseTimeout: TimeAmount? = .seconds(600)
    /// After a keepalive PING, how long to wait for any frame (spec §10.1).
    public var keepaliveTimeout: TimeAmount = .seconds(20)
    /// How long a drain may take before remaining streams are cancelled (spec §10.2).
    public var goAwayGrace: TimeAmount = .seconds(30)
    /// How receive windows grow toward the bandwidth-delay product (spec §7.4).
    public var windowTuning = WindowTuning()
    /// How many closed streams are remembered to tell a late frame from a protocol error (spec §6.3).
    public var rememberedClosedStreams: Int = 1_024
    /// Reset rate, glitch budget, empty-frame run, control-frame queue, preface timeout (spec §12).
    public var abuseLimits = AbuseLimits()

    /// An acceptor that announces no instance id announces this process's (spec §3.3).
    public init(role: Role, settings: Settings = Settings()) {
        self.role = role
        self.settings = settings
        if role == .acceptor && settings.instanceID == 0 { self.settings.instanceID = Self.processInstanceID }
    }

    /// The random, non-zero id this process's acceptor connections announce in `INSTANCE_ID` (spec
    /// §3.3): one per process, so a peer — and multi-hub routing — can tell which hub instance it
    /// reached, and that two connections reached the same one.
    public static let processInstanceID = UInt32.random(in: 1...UInt32.max)
}
