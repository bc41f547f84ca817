import NIOCore
import NIOPosix
import Tether
import TetherSession
import TetherWire
import Testing

/// spec §7.1, §10.3: a peer that breaks the rules is cut off with the right code.
@Suite struct ConnectionErrorTests {
    @Test func dataBeyondCreditEndsTheConnectionWithFlowControlError() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let listener = try await TetherListener.start(group: group)
        let peer = try await RawPeer.connect(to: listener.address, group: group)
        var connections = listener.connections.makeAsyncIterator()
        let server = try #require(await connections.next())

        // The default stream credit is 262,144 octets; send 17 full frames (278,375 octets).
        var frames: [Frame] = [.open(OpenFrame(streamID: 1, streamClass: .bulk, service: "echo"))]
        for _ in 0..<17 {
            frames.append(.data(DataFrame(streamID: 1, payload: ByteBuffer(repeating: 7, count: 16_375))))
        }
        await peer.send(frames, preface: Settings())

        let received = try await peer.framesUntilClosed()
        let goAway = received.compactMap { frame -> GoAwayFrame? in
            if case .goAway(let goAway) = frame { return goAway }
            return nil
        }
        #expect(goAway.count == 1)
        #expect(goAway.first?.code == .flowControlError)
        #expect(goAway.first?.lastStreamID == 1)
        #expect(await server.closed() == .flowControlError)
        try await listener.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func malformedFrameEndsTheConnectionWithItsCode() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let listener = try await TetherListener.start(group: group)
        let peer = try await RawPeer.connect(to: listener.address, group: group)
        var connections = listener.connections.makeAsyncIterator()
        let server = try #require(await connections.next())

        var bytes = ByteBuffer()
        bytes.writePreface(Settings())
        bytes.writeFrameHeader(FrameHeader(length: 0xFF_FFFF, type: .data, flags: 0, streamID: 1))
        await peer.sendRaw(bytes)  // the server may close before the write completes

        let received = try await peer.framesUntilClosed()
        guard case .goAway(let goAway)? = received.last else {
            Issue.record("expected a GOAWAY last, got \(received)")
            return
        }
        #expect(goAway.code == .frameSizeError)
        #expect(await server.closed() == .frameSizeError)
        try await listener.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func badPrefaceEndsTheConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let listener = try await TetherListener.start(group: group)
        // Written as the connection comes up, and tolerated if the server has closed by then.
        let peer = try await RawPeer.connect(
            to: listener.address, group: group, first: ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        var connections = listener.connections.makeAsyncIterator()
        let server = try #require(await connections.next())
        let received = try await peer.framesUntilClosed()
        guard case .goAway(let goAway)? = received.last else {
            Issue.record("expected a GOAWAY last, got \(received)")
            return
        }
        #expect(goAway.code == .protocolError)
        #expect(await server.closed() == .protocolError)
        try await listener.channel.close()
        try await group.shutdownGracefully()
    }
}
