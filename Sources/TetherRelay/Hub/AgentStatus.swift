import Foundation
import Tether
import TetherSession
import TetherWire

/// One connected agent as the hub's agents API and status page show it (README "Agents API").
public struct AgentStatus: Sendable, Encodable, Equatable {
    public var tenant: String
    public var agent: String
    /// The edge's address as the hub sees it (a NAT's or a proxy's, often).
    public var address: String?
    public var connectedSince: Date
    /// The hub instance holding the connection (its `INSTANCE_ID`, spec §3.3, in hex).
    public var hubInstance: String
    /// The edge's release (`IMPLEMENTATION_VERSION`, spec §3.3); nil when it did not say.
    public var edgeVersion: String?
    /// The protocol version of the connection (spec §3.4).
    public var protocolVersion: UInt32?
    public var certificateNotAfter: Date?
    /// Open streams and totals by class (`command`, `metadata`, `logs`, `bulk`); empty for an
    /// agent another hub instance holds.
    public var streams: [String: RelayStreams]
    /// DATA octets from and to the agent since it connected.
    public var octetsFromAgent: Int
    public var octetsToAgent: Int
    /// DATA octets per second over the hub's last 5-second sample; nil before the first.
    public var throughputFromAgent: Double?
    public var throughputToAgent: Double?
    public var lastError: AgentError?
}

/// The last thing that went wrong with an agent: its connection ended badly, or a stream the hub
/// opened toward it was refused or unanswered.
public struct AgentError: Sendable, Encodable, Equatable {
    public var at: Date
    public var error: String
}

/// What the admin listener's agents API and status page read (the hub).
public protocol AgentDirectory: Sendable {
    /// Agents connected now, of `tenant` only when it is given, by tenant and agent.
    func agents(tenant: String?) async -> [AgentStatus]
    /// One agent, while it is connected.
    func agent(_ identity: TetherIdentity) async -> AgentStatus?
    /// Tokens that may read their own tenant's agents: the front door's (README "Front door").
    var tenantTokens: [PlaneToken] { get }
    /// The hub instance and release, for the status page's title.
    var instance: String { get }
    /// The agent's latest METADATA document (README "Metadata"), connected or not.
    func latestMetadata(of identity: TetherIdentity) -> LatestMetadataStore.Document?
    /// A LOGS stream from the agent's log `source` (spec/LOGS.md §2), once the edge opened the file.
    func openLogs(
        of identity: TetherIdentity, source: String, file: String?, cursor: String?, follow: Bool, user: String
    ) async throws(HubRelay.OpenFailure) -> TetherStream
}

extension HubRelay: AgentDirectory {
    public var tenantTokens: [PlaneToken] { self.configuration.frontDoor?.tokens ?? [] }

    public var instance: String { String(SessionConfiguration.processInstanceID, radix: 16) }

    public func latestMetadata(of identity: TetherIdentity) -> LatestMetadataStore.Document? {
        self.latestMetadata.document(of: identity)
    }

    public func openLogs(
        of identity: TetherIdentity, source: String, file: String?, cursor: String?, follow: Bool, user: String
    ) async throws(HubRelay.OpenFailure) -> TetherStream {
        var metadata = [(key: LogFollower.followKey, value: follow ? "1" : "0")]
        if let cursor { metadata.append((key: LogFollower.cursorKey, value: cursor)) }
        if let file { metadata.append((key: LogFollower.fileKey, value: file)) }
        let timeout = self.configuration.frontDoor?.answerTimeout ?? .seconds(15)
        let handle = try await self.openStream(
            to: identity, target: source, user: user, class: .logs, metadata: metadata, within: timeout)
        // The plane sends nothing on a LOGS stream but its FIN (spec/LOGS.md §2).
        handle.eventLoop.execute { _ = handle.finish() }
        return TetherStream(handle)
    }

    public func agents(tenant: String?) async -> [AgentStatus] {
        var statuses: [AgentStatus] = []
        for presence in (try? await self.registry.agents(tenant: tenant)) ?? [] { statuses.append(await self.status(of: presence)) }
        return statuses
    }

    public func agent(_ identity: TetherIdentity) async -> AgentStatus? {
        // This instance's connection first: only it has live figures.
        let presences = (try? await self.registry.presence(of: identity)) ?? []
        guard let presence = presences.first(where: { $0.hubInstance == SessionConfiguration.processInstanceID }) ?? presences.first
        else { return nil }
        return await self.status(of: presence)
    }

    /// What the registry says of a connection and, when this instance holds it, its live figures.
    private func status(of presence: AgentPresence) async -> AgentStatus {
        var status = AgentStatus(
            tenant: presence.identity.tenant, agent: presence.identity.agentID, address: presence.address,
            connectedSince: presence.connectedSince, hubInstance: String(presence.hubInstance, radix: 16),
            certificateNotAfter: presence.certificateNotAfter, streams: [:], octetsFromAgent: 0, octetsToAgent: 0,
            lastError: self.hubAgents.lastError(of: presence.identity))
        guard presence.hubInstance == SessionConfiguration.processInstanceID,
            let connection = self.hubAgents.connection(to: presence.identity)
        else { return status }
        if let peer = try? await connection.ready() {
            status.edgeVersion = TetherRelease.version(packed: peer.implementationVersion)
            status.protocolVersion = Settings.negotiateVersion(self.settings, peer)
        }
        status.streams = await RelayStreams.byClass(of: [connection])
        status.octetsFromAgent = status.streams.values.reduce(0) { $0 + $1.octetsIn }
        status.octetsToAgent = status.streams.values.reduce(0) { $0 + $1.octetsOut }
        let throughput = self.traffic.throughput(of: connection)
        status.throughputFromAgent = throughput?.received
        status.throughputToAgent = throughput?.sent
        return status
    }
}
