import NIOConcurrencyHelpers

/// A value a service publishes once it is up — where it listens, that it listens — for any
/// number of tasks to await. Unlike an `EventLoopPromise` it needs no event loop, so a service
/// that never runs, or outlives its loops, leaves nothing to complete.
final class Readiness<Value: Sendable>: Sendable {
    private let state = NIOLockedValueBox<State>(.waiting([]))

    private enum State {
        case waiting([CheckedContinuation<Value, any Error>])
        case done(Result<Value, any Error>)
    }

    /// Publishes `result`; only the first one counts.
    func resolve(_ result: Result<Value, any Error>) {
        let waiters = self.state.withLockedValue { state -> [CheckedContinuation<Value, any Error>] in
            guard case .waiting(let waiters) = state else { return [] }
            state = .done(result)
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    var value: Value {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let result = self.state.withLockedValue { state -> Result<Value, any Error>? in
                    switch state {
                    case .waiting(let waiters):
                        state = .waiting(waiters + [continuation])
                        return nil
                    case .done(let result):
                        return result
                    }
                }
                if let result { continuation.resume(with: result) }
            }
        }
    }
}
