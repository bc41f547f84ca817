import NIOConcurrencyHelpers
import NIOCore

/// A token bucket in front of the TLS handshake (DESIGN "Security model": admission). A reconnect
/// storm of thousands of edges would otherwise spend every core on full handshakes while live
/// edges' traffic waits; a connection over the rate is closed before its handshake starts, which
/// costs almost nothing, and its edge backs off and comes back later.
public final class HandshakeRateLimit: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: NIODeadline
    }

    /// Handshakes allowed per second, on average.
    public let perSecond: Double
    /// How many may start at once after a quiet spell.
    public let burst: Double
    private let now: @Sendable () -> NIODeadline
    private let bucket: NIOLockedValueBox<Bucket>

    /// `burst` defaults to one second's worth. `now` is injected for tests.
    public init(perSecond: Int, burst: Int? = nil, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        precondition(perSecond > 0)
        self.perSecond = Double(perSecond)
        self.burst = Double(max(1, burst ?? perSecond))
        self.now = now
        self.bucket = NIOLockedValueBox(Bucket(tokens: self.burst, updated: now()))
    }

    /// Takes a token if one is there: true lets a handshake start.
    public func take() -> Bool {
        let now = self.now()
        return self.bucket.withLockedValue { bucket in
            let elapsed = Double((now - bucket.updated).nanoseconds) / 1e9
            bucket.tokens = min(self.burst, bucket.tokens + max(0, elapsed) * self.perSecond)
            bucket.updated = now
            guard bucket.tokens >= 1 else { return false }
            bucket.tokens -= 1
            return true
        }
    }
}
