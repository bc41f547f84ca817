import NIOCore
import TetherWire

/// The connection-level abuse limits of spec §12. A peer that trips one is ended with GOAWAY
/// `ENHANCE_YOUR_CALM`; ``Session/trippedLimit`` says which.
public struct AbuseLimits: Sendable, Hashable {
    /// Streams the peer resets, plus streams we reset because of the peer.
    public var resets = TokenBucket(burst: 500, perSecond: 50)
    /// Unknown frames, PINGs, unmatched PING ACKs, frames on forgotten streams, small credit raises.
    public var glitches = TokenBucket(burst: 1_000, perSecond: 100)
    /// Consecutive frames that carry nothing.
    public var emptyFrameRun = 100
    /// Control frames queued for a peer that does not read.
    public var controlQueue = 4_096
    /// A CREDIT raising a byte limit by less than this, and by less than half the window the peer
    /// announced for that limit, costs a glitch point (spec §7.2, §12).
    public var minimumCreditIncrement: UInt64 = 1_024
    /// The peer's SETTINGS must arrive within this long of the connection's start.
    public var prefaceTimeout: TimeAmount = .seconds(10)

    public init() {}
}

/// Which limit of spec §12 a peer tripped.
public enum AbuseLimit: String, Sendable, Hashable, CaseIterable {
    case resetRate = "reset-rate"
    case glitches = "glitch-budget"
    case emptyFrames = "empty-frame-run"
    case controlQueue = "control-frame-queue"
    case preface = "preface-timeout"
}

/// A token bucket: `burst` tokens, refilled at `perSecond`. Taking from an empty bucket fails.
public struct TokenBucket: Sendable, Hashable {
    public var burst: Double
    public var perSecond: Double
    private var tokens: Double
    private var refilled: NIODeadline?

    public init(burst: Int, perSecond: Int) {
        self.burst = Double(burst)
        self.perSecond = Double(perSecond)
        self.tokens = Double(burst)
    }

    /// Takes one token; false when none is left.
    mutating func take(now: NIODeadline) -> Bool {
        if let refilled = self.refilled {
            let elapsed = Double(max(0, (now - refilled).nanoseconds)) / 1e9
            self.tokens = min(self.burst, self.tokens + elapsed * self.perSecond)
        } else {
            self.tokens = self.burst
        }
        self.refilled = now
        guard self.tokens >= 1 else { return false }
        self.tokens -= 1
        return true
    }
}

extension Session {
    /// Ends the connection for tripping `limit` (spec §12).
    mutating func tripped(_ limit: AbuseLimit, _ reason: String) -> SessionEvents {
        guard !self.hasFailed else { return .none }
        self.trippedLimit = limit
        return self.fail(.enhanceYourCalm, "\(limit.rawValue): \(reason)")
    }

    /// One glitch point (spec §12); fails the connection when the budget is spent.
    mutating func glitch(_ what: String, now: NIODeadline) -> SessionEvents {
        self.counters.glitches += 1
        guard self.abuse.glitches.take(now: now) else { return self.tripped(.glitches, what) }
        return .none
    }

    /// A stream reset by the peer, or by us because of the peer (spec §12 reset rate).
    mutating func countReset(now: NIODeadline) -> SessionEvents {
        guard self.abuse.resets.take(now: now) else {
            return self.tripped(.resetRate, "more than \(Int(self.abuse.resets.burst)) resets, \(Int(self.abuse.resets.perSecond))/s after")
        }
        return .none
    }

    /// Counts a frame that carried nothing, or ends a run of them (spec §12).
    mutating func noteEmpty(_ empty: Bool) -> SessionEvents {
        guard empty else {
            self.emptyFrames = 0
            return .none
        }
        self.emptyFrames += 1
        guard self.emptyFrames <= self.configuration.abuseLimits.emptyFrameRun else {
            return self.tripped(.emptyFrames, "\(self.emptyFrames) frames in a row that carry nothing")
        }
        return .none
    }

    /// Fails the connection when more control frames wait than the cap allows (spec §12).
    mutating func checkControlQueue() -> SessionEvents {
        guard self.control.count > self.configuration.abuseLimits.controlQueue else { return .none }
        return self.tripped(.controlQueue, "\(self.control.count) control frames queued for a peer that does not read")
    }
}

extension ErrorCode {
    /// Whether refusing a stream with this code turns down what the peer asked for — a service
    /// that does not exist, or one the policy forbids — so the refusal counts toward the peer's
    /// reset rate (spec §12). Every other refusal is about our own state and never counts.
    var refusesWhatThePeerAsked: Bool { self == .unknownService || self == .policyDenied }
}
