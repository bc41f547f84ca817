import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Tether
import TetherSession
import TetherTLS
import TetherWire

/// The hub's live table of agents and its admission step (spec §10.3), behind one lock so that
/// admission, connections coming up and going down, and reloads of the revocation list agree:
///
/// - a revoked identity is refused; one that already holds `connectionsPerIdentity` connections
///   (draining ones included, so a flapping edge cannot pile them up) is refused;
/// - a newer connection of an identity replaces the older ones: they get GOAWAY `REPLACED` and
///   their open streams may finish (spec §2.2); streams toward the agent go to the newest;
/// - a reload that revokes a live identity drains its connections with GOAWAY `REFUSED`.
final class HubAgents: Sendable {
    private struct Agent {
        /// Admitted and not yet closed: counted from admission, before the connection is up.
        var admitted = 0
        /// Up, oldest first; the last is the one streams toward the agent use.
        var live: [TetherConnection] = []
        /// What the identity's connections may make the hub buffer: their initial connection
        /// windows and their growth (``WindowTuning/initialWindowFromPool``), inside the process's pool.
        var windows: WindowPool?
    }

    private struct State {
        var revoked = RevocationList()
        var agents: [TetherIdentity: Agent] = [:]
        /// Kept across reconnects, so an agent that is back shows why it went.
        var lastErrors: [TetherIdentity: AgentError] = [:]
    }

    /// Identities whose last error is remembered; past it the oldest is forgotten.
    static let rememberedErrors = 65_536

    let connectionsPerIdentity: Int
    let windowMemoryPerIdentity: Int
    private let state = NIOLockedValueBox(State())

    init(connectionsPerIdentity: Int, windowMemoryPerIdentity: Int, revoked: RevocationList) {
        self.connectionsPerIdentity = connectionsPerIdentity
        self.windowMemoryPerIdentity = windowMemoryPerIdentity
        self.state.withLockedValue { $0.revoked = revoked }
    }

    /// Gives an admitted connection its identity's window pool (``TetherTransport/ConnectionConfigurator``).
    func configure(_ peer: TLSPeer, _ configuration: inout TetherConnectionHandler.Configuration) {
        guard let identity = peer.identity else { return }
        let pool = self.state.withLockedValue { state in
            if let pool = state.agents[identity]?.windows { return pool }
            let pool = WindowPool(capacity: UInt64(self.windowMemoryPerIdentity), parent: configuration.session.windowTuning.pool)
            state.agents[identity, default: Agent()].windows = pool
            return pool
        }
        configuration.session.windowTuning.pool = pool
        configuration.session.windowTuning.initialWindowFromPool = true
    }

    /// The admission decision (``TetherTransport/Admission``); an admitted connection is counted
    /// against its identity's cap from here on.
    func admit(_ peer: TLSPeer) -> TetherTransport.AdmissionDecision {
        guard let identity = peer.identity else { return .refuse("no identity") }
        return self.state.withLockedValue { state in
            if state.revoked.contains(identity) { return .refuse("identity revoked") }
            guard state.agents[identity, default: Agent()].admitted < self.connectionsPerIdentity else {
                return .refuse("too many connections for this identity")
            }
            state.agents[identity, default: Agent()].admitted += 1
            return .admit
        }
    }

    /// An admitted connection is up; returns the older connections of its identity that it
    /// replaces (the caller sends them GOAWAY `REPLACED`).
    func up(_ connection: TetherConnection) -> [TetherConnection] {
        guard let identity = connection.peerIdentity else { return [] }
        return self.state.withLockedValue { state in
            let replaced = state.agents[identity]?.live ?? []
            state.agents[identity, default: Agent()].live = [connection]
            return replaced
        }
    }

    /// A connection closed.
    func down(_ connection: TetherConnection) {
        guard let identity = connection.peerIdentity else { return }
        self.state.withLockedValue { state in
            guard var agent = state.agents[identity] else { return }
            agent.admitted -= 1
            agent.live.removeAll { $0.channel === connection.channel }
            state.agents[identity] = agent.admitted > 0 ? agent : nil
        }
    }

    /// The connection streams toward `identity` use: its newest.
    func connection(to identity: TetherIdentity) -> TetherConnection? {
        self.state.withLockedValue { $0.agents[identity]?.live.last }
    }

    /// Records `error` as `identity`'s last.
    func noteError(_ error: String, of identity: TetherIdentity, at date: Date = Date()) {
        self.state.withLockedValue { state in
            state.lastErrors[identity] = AgentError(at: date, error: error)
            if state.lastErrors.count > Self.rememberedErrors,
                let oldest = state.lastErrors.min(by: { $0.value.at < $1.value.at })?.key
            {
                state.lastErrors.removeValue(forKey: oldest)
            }
        }
    }

    func lastError(of identity: TetherIdentity) -> AgentError? {
        self.state.withLockedValue { $0.lastErrors[identity] }
    }

    /// Agents with a connection up.
    var connected: [TetherIdentity] {
        self.state.withLockedValue { state in state.agents.compactMap { $0.value.live.isEmpty ? nil : $0.key } }
    }

    /// Puts `list` in force; returns the live connections of identities it revokes (the caller
    /// drains them).
    func revoke(_ list: RevocationList) -> [TetherConnection] {
        self.state.withLockedValue { state in
            state.revoked = list
            return state.agents.filter { list.contains($0.key) }.flatMap { $0.value.live }
        }
    }
}
