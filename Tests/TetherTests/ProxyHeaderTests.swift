import Foundation
import NIOCore
import NIOPosix
import TetherBench
import TetherWire
import Testing

@testable import TetherRelay

/// The PROXY protocol v2 header the hub writes to backends (spec/RELAYS.md §2).
@Suite struct ProxyHeaderTests {
    /// spec/RELAYS.md §2's example: IPv4 addresses and one TLV, the octets written out by hand
    /// from the PROXY protocol specification (section 2.2).
    @Test func theHeaderIsLaidOutAsTheProtocolSays() throws {
        let header = ProxyHeader(
            source: try SocketAddress(ipAddress: "192.0.2.7", port: 40_000),
            destination: try SocketAddress(ipAddress: "198.51.100.1", port: 7_443),
            tlvs: [.init(ProxyHeader.TLV.tenant, "acme")])
        let expected: [UInt8] =
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]  // signature
            + [0x21, 0x11, 0x00, 0x13]  // v2 PROXY, TCP over IPv4, 12 + 7 octets follow
            + [192, 0, 2, 7, 198, 51, 100, 1, 0x9C, 0x40, 0x1D, 0x13]  // addresses, ports
            + [0xE0, 0x00, 0x04] + Array("acme".utf8)
        #expect(Array(buffer: header.encoded()) == expected)
        // No addresses of one family: AF_UNSPEC, and the TLVs still follow.
        let unspecified = ProxyHeader(source: nil, destination: nil, tlvs: [.init(ProxyHeader.TLV.agent, "n")])
        #expect(Array(Array(buffer: unspecified.encoded())[12...]) == [0x21, 0x00, 0x00, 0x04, 0xE1, 0x00, 0x01, 0x6E])
    }

    /// A stream an edge opens reaches a backend that reads the header with an independent parser
    /// (the `proxy-protocol` package from PyPI): the edge's address, the hub's end, tenant, agent,
    /// service, class and a unique id; the stream's octets follow the header unchanged.
    @Test(.timeLimit(.minutes(2))) func anIndependentParserReadsTheHubsHeader() async throws {
        let backend = try ParsingBackend()
        defer { backend.stop() }
        var pair = try await RelayPair(
            policy: """
                version: 1
                toPlane:
                  - {service: status, class: [command], opaque: true}
                """)
        pair.hub.services = [.init(name: "status", backend: .tcp(host: "127.0.0.1", port: backend.port), tenants: ["demo"])]
        pair.edge.forwards = [.init(name: "status", listen: .tcp(host: "127.0.0.1", port: 0), service: "status", streamClass: .command)]
        try await pair.run { hub, edge in
            let edgeEnd = try #require(edge.connection?.channel.localAddress)

            let replies = try await LineCollector.exchange(with: edge.boundAddress(ofForward: "status")!, lines: ["hello over the tunnel"])
            try #require(replies.count == 1, "\(replies)")
            let parsed = try #require(try? JSONSerialization.jsonObject(with: Data(replies[0].utf8)) as? [String: Any], "\(replies[0])")
            #expect(parsed["source"] as? String == "127.0.0.1:\(edgeEnd.port!)", "the edge's address as the hub saw it")
            #expect(parsed["dest"] as? String == "127.0.0.1:\(try await hub.localAddress.port!)")
            let tlvs = try #require(parsed["tlvs"] as? [String: String])
            #expect(tlvs["224"] == "demo" && tlvs["225"] == "node-1", "tenant and agent: \(tlvs)")
            #expect(tlvs["226"] == "status" && tlvs["227"] == "command", "service and class: \(tlvs)")
            #expect(tlvs["5"]?.hasSuffix("/1") == true, "the unique id ends in the stream id: \(tlvs)")
            #expect(parsed["payload"] as? String == "hello over the tunnel\n")
        }
    }
}

/// A backend in Python that reads one connection's PROXY v2 header with the `proxy-protocol`
/// package, reads the rest until the FIN, and answers with one JSON line of what it found.
struct ParsingBackend {
    let process: Process
    let port: Int

    static let script = #"""
        import json, socket, sys
        from proxyprotocol.v2 import ProxyProtocolV2
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        connection, _ = listener.accept()
        def read(count):
            data = b""
            while len(data) < count:
                chunk = connection.recv(count - len(data))
                if not chunk: sys.exit("closed inside the header")
                data += chunk
            return data
        fixed = read(16)
        header = fixed + read(int.from_bytes(fixed[14:16], "big"))
        result = ProxyProtocolV2().unpack(header)
        payload = b""
        while chunk := connection.recv(65536): payload += chunk
        answer = {
            "source": "%s:%d" % (result.source[0], result.source[1]),
            "dest": "%s:%d" % (result.dest[0], result.dest[1]),
            "tlvs": {str(kind): value.decode() for kind, value in result.tlv.items()},
            "payload": payload.decode(),
        }
        connection.sendall((json.dumps(answer) + "\n").encode())
        connection.close()
        """#

    init() throws {
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        self.process.arguments = ["python3", "-c", Self.script]
        let output = Pipe()
        self.process.standardOutput = output
        try self.process.run()
        var line = Data()
        while let octet = try output.fileHandleForReading.read(upToCount: 1), !octet.isEmpty, octet != Data("\n".utf8) {
            line += octet
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            throw RelayError("the parsing backend did not start (is the proxy-protocol package installed? .ci/run installs it)")
        }
        self.port = port
    }

    func stop() {
        if self.process.isRunning { self.process.terminate() }
    }
}
