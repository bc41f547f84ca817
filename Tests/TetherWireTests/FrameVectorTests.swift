import NIOCore
import TetherTestSupport
import TetherWire
import Testing

/// spec §13: every frame vector decodes to its fields and re-encodes to its bytes.
@Suite struct FrameVectorTests {
    static let vectors = try! Vectors.frames()
    static let malformed = try! Vectors.malformed()

    @Test func vectorsCoverEveryFrameTypeAndFlag() {
        var seen = Set<String>()
        for vector in Self.vectors {
            switch vector.frame {
            case .data(let frame): seen.insert("DATA/\(frame.flags.rawValue)")
            case .open(let frame): seen.insert("OPEN/\(frame.streamClass.name)")
            case .reset: seen.insert("RESET")
            case .credit(.stream): seen.insert("CREDIT/stream")
            case .credit(.connection): seen.insert("CREDIT/connection")
            case .credit(.streams): seen.insert("CREDIT/streams")
            case .settings(.values): seen.insert("SETTINGS")
            case .settings(.ack): seen.insert("SETTINGS/ACK")
            case .ping(let ping): seen.insert("PING/\(ping.ack)")
            case .goAway: seen.insert("GOAWAY")
            case .opened: seen.insert("OPENED")
            case .unknown: seen.insert("unknown")
            }
        }
        let required: Set<String> = [
            "DATA/0", "DATA/1", "DATA/2", "DATA/3", "DATA/4", "DATA/6", "DATA/12", "DATA/15", "OPEN/COMMAND", "OPEN/METADATA",
            "OPEN/LOGS", "OPEN/BULK", "RESET", "CREDIT/stream", "CREDIT/connection", "CREDIT/streams", "SETTINGS",
            "SETTINGS/ACK", "PING/false", "PING/true", "GOAWAY", "OPENED", "unknown",
        ]
        #expect(required.subtracting(seen).isEmpty, "missing: \(required.subtracting(seen))")
    }

    @Test(arguments: Self.vectors.map(\.name))
    func decodesAndReencodesByteExact(name: String) throws {
        let vector = Self.vectors.first { $0.name == name }!
        var decoder = FrameDecoder()
        decoder.append(vector.bytes)
        let frame = try decoder.nextFrame()
        #expect(frame == vector.frame)
        #expect(try decoder.nextFrame() == nil)
        #expect(decoder.bufferedBytes == 0)

        var encoded = ByteBuffer()
        let written = encoded.writeFrame(vector.frame)
        #expect(written == vector.bytes.readableBytes)
        #expect(encoded == vector.bytes, "re-encoded \(encoded.hexString.prefix(80))")
    }

    /// A test that cannot fail is a defect: flip each octet of each vector and the decoded frame
    /// must differ from the vector's fields (or the bytes must be rejected).
    @Test func everyOctetOfEveryVectorMatters() throws {
        for vector in Self.vectors {
            let octets = Array(vector.bytes.readableBytesView)
            // The long vector's payload octets are alike; its first 64 octets and last octet suffice.
            let positions = octets.count > 256 ? Array(0..<64) + [octets.count - 1] : Array(octets.indices)
            for position in positions {
                var mutated = octets
                mutated[position] ^= 0x01
                var decoder = FrameDecoder(limits: .init(maxFramePayload: 1 << 24 - 1))
                decoder.append(ByteBuffer(bytes: mutated))
                // Caught when the bytes are rejected, decode differently, or (undefined flag bits,
                // which receivers ignore, spec §4.1) no longer re-encode byte-exact.
                guard let decoded = try? decoder.nextFrame(), decoded == vector.frame else { continue }
                var reencoded = ByteBuffer()
                reencoded.writeFrame(decoded)
                #expect(reencoded != ByteBuffer(bytes: mutated), "\(vector.name): octet \(position) did not matter")
            }
        }
    }

    @Test(arguments: Self.malformed.map(\.name))
    func malformedInputIsRejectedWithTheSpecCode(name: String) throws {
        let vector = Self.malformed.first { $0.name == name }!
        var decoder = FrameDecoder(limits: vector.limits, expectsPreface: vector.preface)
        decoder.append(vector.bytes)
        if vector.error == "incomplete" {
            #expect(try decoder.nextFrame() == nil)
            #expect(decoder.bufferedBytes > 0)
            return
        }
        do {
            while try decoder.nextFrame() != nil {}
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.code.name == vector.error)
            #expect(error.reason.name == vector.reason)
            #expect(error.reason.section == vector.section)
        }
    }

    @Test func malformedVectorsCoverEveryReason() {
        let covered = Set(Self.malformed.compactMap(\.reason))
        let all = Set(WireError.Reason.all.map(\.name))
        #expect(all.subtracting(covered).isEmpty, "no vector for \(all.subtracting(covered))")
    }
}
