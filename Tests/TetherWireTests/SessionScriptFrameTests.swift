import NIOCore
import TetherTestSupport
import TetherWire
import Testing

/// The session scripts (spec §13) are run by the session tests; here every frame they mention must
/// be one the codec accepts and round-trips, so a script cannot test an unencodable frame.
@Suite struct SessionScriptFrameTests {
    @Test func everyScriptedFrameRoundTrips() throws {
        let scripts = try Vectors.sessionScripts()
        #expect(scripts.count >= 50)
        var frames = 0
        for (file, script) in scripts {
            let name = try script.string("name")
            #expect(["dialer", "acceptor"].contains(try script.string("role")), "\(file): \(name)")
            for step in try script.array("steps") {
                var described: [[String: Any]] = []
                if let recv = step["recv"] as? [String: Any] { described.append(recv) }
                for output in step["expect"] as? [[String: Any]] ?? [] {
                    if let send = output["send"] as? [String: Any] { described.append(send) }
                }
                for fields in described {
                    var frame = try VectorFrame.frame(fields)
                    if case .goAway(var goAway) = frame, fields["debug"] == nil {
                        goAway.debug = ""
                        frame = .goAway(goAway)
                    }
                    var bytes = ByteBuffer()
                    bytes.writeFrame(frame)
                    var decoder = FrameDecoder()
                    decoder.append(bytes)
                    #expect(try decoder.nextFrame() == frame, "\(file): \(name)")
                    frames += 1
                }
            }
        }
        #expect(frames > 100)
    }
}
