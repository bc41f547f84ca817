import NIOConcurrencyHelpers
import NIOCore

/// A relay's named listening sockets, changed in place by a reload (README "Reloading"). A
/// listener whose endpoint did not change keeps its socket, so nothing in its backlog is lost; a
/// new or moved one is bound before anything is closed, so a reload that cannot bind one changes
/// nothing; a removed one stops accepting, and the connections it accepted go on. Reloads run one
/// at a time (the relay's SIGHUP loop); ``closeAll()`` ends them for good.
final class ListenerSet: Sendable {
    private struct Open {
        var endpoint: Endpoint
        var channel: any Channel
    }

    private struct State {
        var open: [String: Open] = [:]
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    /// Makes the open listeners exactly `wanted` (name → endpoint), binding each new or moved one with `bind`. When a
    /// bind fails, what this call bound is closed again and the error is thrown: the listeners
    /// open before stay as they were. Returns the names bound and the names closed.
    @discardableResult
    func apply(
        _ wanted: [String: Endpoint], bind: (String) async throws -> any Channel
    ) async throws -> (bound: [String], closed: [String]) {
        let before = self.state.withLockedValue { $0.open }
        var bound: [String: Open] = [:]
        do {
            for (name, endpoint) in wanted.sorted(by: { $0.key < $1.key }) where before[name]?.endpoint != endpoint {
                bound[name] = Open(endpoint: endpoint, channel: try await bind(name))
            }
        } catch {
            for open in bound.values { try? await open.channel.close() }
            throw error
        }
        let (retired, closed) = self.state.withLockedValue { state -> ([Open], Bool) in
            guard !state.closed else { return (Array(bound.values), true) }
            let retired = state.open.filter { name, _ in wanted[name] == nil || bound[name] != nil }
            state.open.merge(bound) { $1 }
            for name in retired.keys where bound[name] == nil { state.open[name] = nil }
            return (Array(retired.values), false)
        }
        for open in retired { try? await open.channel.close() }
        if closed { return ([], []) }
        let removed = before.keys.filter { wanted[$0] == nil || bound[$0] != nil }
        return (bound.keys.sorted(), removed.sorted())
    }

    /// Where the listener `name` listens, while it is open.
    func localAddress(of name: String) -> SocketAddress? {
        self.state.withLockedValue { $0.open[name]?.channel.localAddress }
    }

    /// Stops every listener (a graceful shutdown: nothing new is accepted); later reloads bind nothing.
    func closeAll() {
        let open = self.state.withLockedValue { state in
            state.closed = true
            defer { state.open = [:] }
            return state.open.values.map(\.channel)
        }
        for channel in open { channel.close(promise: nil) }
    }
}
