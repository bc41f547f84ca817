import NIOCore
import TetherWire
import Testing

@testable import TetherSession

/// spec §3.3: an acceptor announces a random, non-zero INSTANCE_ID — the same on every connection
/// of the process, so a peer can tell which hub instance it reached — and a dialer announces 0.
@Suite struct InstanceIDTests {
    static func announced(_ role: Role, settings: Settings = Settings()) -> UInt32? {
        var session = Session(configuration: SessionConfiguration(role: role, settings: settings), now: .now())
        guard case .settings(.values(let entries)) = session.producedFrames(now: .now()).first else { return nil }
        return entries.first { $0.id == .instanceID }?.value
    }

    @Test func anAcceptorAnnouncesThisProcesssRandomInstanceID() {
        let first = Self.announced(.acceptor)
        #expect(first != nil && first != 0)
        #expect(Self.announced(.acceptor) == first)
        #expect(first == SessionConfiguration.processInstanceID)
    }

    @Test func aDialerAnnouncesNone() {
        #expect(Self.announced(.dialer) == 0)
    }

    @Test func aConfiguredInstanceIDIsKept() {
        var settings = Settings()
        settings.instanceID = 42
        #expect(Self.announced(.acceptor, settings: settings) == 42)
    }
}
