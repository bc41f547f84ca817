import NIOCore
import TetherTestSupport
import TetherWire
import Testing

@testable import TetherSession

/// spec §6.1, §8.2: OPENs reach the wire in the order streams were opened, whatever their class,
/// and a stream reset before its OPEN was written is still opened first.
@Suite struct OpenOrderTests {
    static func dialer() -> (Session, NIODeadline) {
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var session = Session(configuration: SessionConfiguration(role: .dialer), now: now)
        _ = session.receive(.settings(.values(Settings().entries)), now: now)
        _ = session.producedFrames(now: now)
        return (session, now)
    }

    @Test func aLaterCommandStreamDoesNotOvertakeAnEarlierBulkStreamsOpen() throws {
        var (session, now) = Self.dialer()
        let bulk = try session.openStream(.bulk, service: "backup", now: now).get()
        _ = session.write(bulk, ByteBuffer(repeating: 1, count: 65_536), now: now)
        let logs = try session.openStream(.logs, service: "logs", now: now).get()
        let command = try session.openStream(.command, service: "exec", now: now).get()
        _ = session.write(command, ByteBuffer(string: "uptime"), endMessage: true, now: now)
        let opened = session.producedFrames(now: now).compactMap { frame -> StreamID? in
            if case .open(let open) = frame { return open.streamID }
            return nil
        }
        #expect(opened == [bulk, logs, command])
    }

    @Test func aStreamResetBeforeItsOpenWasWrittenIsOpenedThenReset() throws {
        var (session, now) = Self.dialer()
        let id = try session.openStream(.bulk, service: "backup", now: now).get()
        session.reset(id, code: .cancel)
        let frames = session.producedFrames(now: now)
        #expect(frames.count == 2)
        guard frames.count == 2, case .open(let open) = frames[0], case .reset(let reset) = frames[1] else {
            Issue.record("expected OPEN then RESET, got \(frames)")
            return
        }
        #expect(open.streamID == id)
        #expect(reset.streamID == id)
    }
}
