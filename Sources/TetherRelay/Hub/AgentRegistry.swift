import Foundation
import NIOConcurrencyHelpers
import TetherWire

/// One agent's connection to one hub instance, as a registry records it (DESIGN "Scale beyond one
/// hub": keyed by tenant, agent and hub instance, so several hubs can share one registry).
public struct AgentPresence: Sendable, Hashable {
    public var identity: TetherIdentity
    /// The hub instance holding the connection (its `INSTANCE_ID`, spec §3.3).
    public var hubInstance: UInt32
    /// Tells one connection of the identity on that hub from the next (a replacement).
    public var connection: UInt64
    public var address: String?
    public var connectedSince: Date
    /// When the agent's certificate expires.
    public var certificateNotAfter: Date?

    public init(
        identity: TetherIdentity, hubInstance: UInt32, connection: UInt64, address: String?, connectedSince: Date,
        certificateNotAfter: Date?
    ) {
        self.identity = identity
        self.hubInstance = hubInstance
        self.connection = connection
        self.address = address
        self.connectedSince = connectedSince
        self.certificateNotAfter = certificateNotAfter
    }
}

/// Where a hub records which agents it holds. `async throws`, so an implementation on a shared
/// database (PostgreSQL, with leases) can follow the in-memory one without changing the hub.
public protocol AgentRegistry: Sendable {
    /// `presence` is connected: it replaces any record with the same tenant, agent and hub.
    func connected(_ presence: AgentPresence) async throws
    /// `presence` is gone: removes its record if it is still the one for that tenant, agent and
    /// hub (a replacement that registered meanwhile stays).
    func disconnected(_ presence: AgentPresence) async throws
    /// Where `identity` is connected now (one record per hub).
    func presence(of identity: TetherIdentity) async throws -> [AgentPresence]
    /// Every agent of `tenant` connected now, or of every tenant when nil.
    func agents(tenant: String?) async throws -> [AgentPresence]
}

/// The registry of one hub process.
public final class InMemoryAgentRegistry: AgentRegistry {
    private struct Key: Hashable {
        var identity: TetherIdentity
        var hubInstance: UInt32
    }

    private let records = NIOLockedValueBox<[Key: AgentPresence]>([:])

    public init() {}

    public func connected(_ presence: AgentPresence) async throws {
        self.records.withLockedValue { $0[Key(identity: presence.identity, hubInstance: presence.hubInstance)] = presence }
    }

    public func disconnected(_ presence: AgentPresence) async throws {
        let key = Key(identity: presence.identity, hubInstance: presence.hubInstance)
        self.records.withLockedValue { records in
            if records[key]?.connection == presence.connection { records.removeValue(forKey: key) }
        }
    }

    public func presence(of identity: TetherIdentity) async throws -> [AgentPresence] {
        self.records.withLockedValue { $0.values.filter { $0.identity == identity } }
    }

    public func agents(tenant: String?) async throws -> [AgentPresence] {
        self.records.withLockedValue { records in
            records.values.filter { tenant == nil || $0.identity.tenant == tenant }
                .sorted { ($0.identity.tenant, $0.identity.agentID) < ($1.identity.tenant, $1.identity.agentID) }
        }
    }
}
