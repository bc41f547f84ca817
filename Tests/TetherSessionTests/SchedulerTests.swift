import NIOCore
import TetherWire
import Testing

@testable import TetherSession

/// spec §8.2, measured in octets produced, never in time.
@Suite struct SchedulerTests {
    /// A dialer session whose peer grants effectively unlimited credit, so only the scheduler
    /// decides what goes next.
    static func unlimitedSession() -> Session {
        var settings = Settings()
        settings.initialStreams = PerClass(1_024)
        var configuration = SessionConfiguration(role: .dialer, settings: settings)
        configuration.windowTuning = .disabled
        configuration.sendBufferLimit = .max
        let now = NIODeadline.uptimeNanoseconds(0)
        var session = Session(configuration: configuration, now: now)
        var peer = Settings()
        peer.initialStreamCredit = Settings.maxCredit
        peer.initialConnectionCredit = Settings.maxCredit
        peer.initialStreams = PerClass(1_024)
        _ = session.receive(.settings(.values(peer.entries)), now: now)
        var bytes = ByteBuffer()
        while session.produce(into: &bytes, now: now) != nil { bytes.clear() }
        return session
    }

    /// Produces one frame and reports its class (nil for control frames) and size.
    static func produceOne(_ session: inout Session, classes: [StreamID: StreamClass]) -> (StreamClass?, Int)? {
        var bytes = ByteBuffer()
        guard let produced = session.produce(into: &bytes, now: .uptimeNanoseconds(0)) else { return nil }
        let size = bytes.readableBytes + (produced.payload?.readableBytes ?? 0)
        let header = bytes.readFrameHeader()!
        return (header.type == .data ? classes[header.streamID] : nil, size)
    }

    @Test func backloggedClassesShareTheLinkByWeight() throws {
        var session = Self.unlimitedSession()
        var classes: [StreamID: StreamClass] = [:]
        let now = NIODeadline.uptimeNanoseconds(0)
        // Two streams per class, each with far more than 64 MiB / 8 to send.
        let chunk = ByteBuffer(repeating: 0xAA, count: 1 << 20)
        for streamClass in StreamClass.allCases {
            for _ in 0..<2 {
                let id = try session.openStream(streamClass, service: "s", now: now).get()
                classes[id] = streamClass
                for _ in 0..<40 { _ = session.write(id, chunk, now: now) }
            }
        }
        var octets = PerClass(0)
        var total = 0
        while total < 64 << 20, let (streamClass, size) = Self.produceOne(&session, classes: classes) {
            guard let streamClass else { continue }  // the OPENs
            octets[streamClass] += size
            total += size
        }
        #expect(total >= 64 << 20)
        let expected = PerClass(command: 0.4, metadata: 0.3, logs: 0.2, bulk: 0.1)
        for streamClass in StreamClass.allCases {
            let share = Double(octets[streamClass]) / Double(total)
            #expect(abs(share - expected[streamClass]) <= expected[streamClass] * 0.05, "\(streamClass.name) got \(share)")
        }
    }

    @Test func aCommandWaitsBehindAtMostTheFrameInProgress() throws {
        var session = Self.unlimitedSession()
        var classes: [StreamID: StreamClass] = [:]
        let now = NIODeadline.uptimeNanoseconds(0)
        let chunk = ByteBuffer(repeating: 0xBB, count: 1 << 20)
        for streamClass in [StreamClass.metadata, .logs, .bulk] {
            for _ in 0..<4 {
                let id = try session.openStream(streamClass, service: "s", now: now).get()
                classes[id] = streamClass
                for _ in 0..<8 { _ = session.write(id, chunk, now: now) }
            }
        }
        let command = try session.openStream(.command, service: "exec", now: now).get()
        classes[command] = .command
        // Every so often, in the middle of the other classes' rounds, a command arrives: the very
        // next DATA frame is the command's.
        var produced = 0
        for round in 0..<200 {
            for _ in 0..<(1 + round % 13) {
                _ = try #require(Self.produceOne(&session, classes: classes))
                produced += 1
            }
            _ = session.write(command, ByteBuffer(repeating: 0x63, count: 64), endMessage: true, now: now)
            var next = try #require(Self.produceOne(&session, classes: classes))
            while next.0 == nil { next = try #require(Self.produceOne(&session, classes: classes)) }
            #expect(next.0 == .command, "round \(round): a \(next.0!.name) frame went before the command")
        }
        #expect(produced > 1_000)
    }

    @Test func noClassStarvesUnderACommandFlood() throws {
        var session = Self.unlimitedSession()
        var classes: [StreamID: StreamClass] = [:]
        let now = NIODeadline.uptimeNanoseconds(0)
        let chunk = ByteBuffer(repeating: 0xCC, count: 1 << 20)
        for streamClass in [StreamClass.command, .bulk] {
            let id = try session.openStream(streamClass, service: "s", now: now).get()
            classes[id] = streamClass
            for _ in 0..<32 { _ = session.write(id, chunk, now: now) }
        }
        var octets = PerClass(0)
        var total = 0
        while total < 16 << 20, let (streamClass, size) = Self.produceOne(&session, classes: classes) {
            guard let streamClass else { continue }
            octets[streamClass] += size
            total += size
        }
        // With only COMMAND (weight 4) and BULK (weight 1) backlogged, BULK gets a fifth.
        let bulkShare = Double(octets[.bulk]) / Double(total)
        #expect(abs(bulkShare - 0.2) <= 0.2 * 0.05, "BULK got \(bulkShare)")
    }

    @Test func streamsOfAClassTakeTurns() throws {
        var session = Self.unlimitedSession()
        var classes: [StreamID: StreamClass] = [:]
        let now = NIODeadline.uptimeNanoseconds(0)
        var ids: [StreamID] = []
        for _ in 0..<3 {
            let id = try session.openStream(.logs, service: "s", now: now).get()
            classes[id] = .logs
            ids.append(id)
            _ = session.write(id, ByteBuffer(repeating: 1, count: 16_375 * 4), now: now)
        }
        var order: [StreamID] = []
        var bytes = ByteBuffer()
        while let produced = session.produce(into: &bytes, now: now) {
            _ = produced
            let header = bytes.readFrameHeader()!
            if header.type == .data { order.append(header.streamID) }
            bytes.clear()
        }
        #expect(order == Array(repeating: ids, count: 4).flatMap { $0 })
    }
}
