import NIOCore
import TetherWire

/// Chooses which stream sends next (spec §8.2): deficit round-robin between classes, in priority
/// order, round-robin within a class. CONTROL frames never pass through here; the session sends them
/// first.
///
/// A class's quantum is `weight × 16,384` octets per round. The next stream comes from the
/// highest-priority backlogged class whose deficit is positive; a frame's size is charged to its
/// class; when no backlogged class has deficit left, every class gets its quantum again (an idle
/// class keeps at most one quantum). The cost of a decision does not depend on the number of streams.
struct Scheduler: Sendable {
    /// spec §8.2: COMMAND 4, METADATA 3, LOGS 2, BULK 1.
    static let weights = PerClass<Int>(command: 4, metadata: 3, logs: 2, bulk: 1)
    static let quantumUnit = 16_384

    private var queues = PerClass(CircularBuffer<StreamID>(initialCapacity: 0))
    private var deficits = PerClass<Int>(0)
    private(set) var count = 0

    init() {
        for streamClass in StreamClass.allCases {
            self.deficits[streamClass] = Self.quantum(streamClass)
        }
    }

    static func quantum(_ streamClass: StreamClass) -> Int {
        Self.weights[streamClass] * Self.quantumUnit
    }

    var isEmpty: Bool { self.count == 0 }

    /// Appends a stream to its class's round-robin queue. The caller keeps it from being queued twice.
    mutating func enqueue(_ id: StreamID, _ streamClass: StreamClass) {
        self.queues[streamClass].append(id)
        self.count += 1
    }

    /// Takes the stream that should send the next frame. The caller charges what it sent with
    /// ``charge(_:octets:)`` and enqueues the stream again if it has more.
    mutating func next() -> (StreamID, StreamClass)? {
        guard self.count > 0 else { return nil }
        if let pick = self.pickWithDeficit() { return pick }
        // Every backlogged class has spent its quantum: start a new round.
        for streamClass in StreamClass.allCases {
            let quantum = Self.quantum(streamClass)
            if self.queues[streamClass].isEmpty {
                self.deficits[streamClass] = quantum
            } else {
                self.deficits[streamClass] += quantum
            }
        }
        return self.pickWithDeficit()
    }

    mutating func charge(_ streamClass: StreamClass, octets: Int) {
        self.deficits[streamClass] -= octets
    }

    private mutating func pickWithDeficit() -> (StreamID, StreamClass)? {
        for streamClass in StreamClass.allCases
        where !self.queues[streamClass].isEmpty && self.deficits[streamClass] > 0 {
            self.count -= 1
            return (self.queues[streamClass].removeFirst(), streamClass)
        }
        return nil
    }
}
