// libFuzzer target: the TLS record path after a real handshake (spec §2.1). See fuzz/README.md.
//
// Each input runs a real TLS 1.3 handshake between two TLSHandlers on embedded channels (our
// OpenSSL context, throw-away certificates), then feeds the server what the fuzzer wrote as if it
// came from the client: the first octet picks whether it follows a genuine application record,
// and the stride at which it is split into reads.
// Invariants: nothing traps; octets that did not come out of the client's TLS are never delivered
// as plaintext (only the genuine record's octets may be); the server closes or stays well-formed.
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import TetherTLS
import TetherWire

/// Contexts made once: a CA, a hub certificate and an edge certificate in a temporary directory.
private let contexts: (client: TLSContext, server: TLSContext) = {
    let directory = NSTemporaryDirectory() + "tether-fuzz-tls-\(getpid())"
    try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let authority = try! CertificateAuthority(commonName: "Fuzz CA")
    try! authority.issued.write(certificateTo: directory + "/ca.pem", keyTo: directory + "/ca.key")
    try! authority.issue(.hub(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]))
        .write(certificateTo: directory + "/hub.pem", keyTo: directory + "/hub.key")
    try! authority.issue(.edge(TetherIdentity(tenant: "fuzz", agentID: "edge")!))
        .write(certificateTo: directory + "/edge.pem", keyTo: directory + "/edge.key")
    let server = try! TLSContext(
        configuration: TLSConfiguration(
            role: .server, certificateChainFile: directory + "/hub.pem", privateKeyFile: directory + "/hub.key",
            trustedCAFiles: [directory + "/ca.pem"]))
    let client = try! TLSContext(
        configuration: TLSConfiguration(
            role: .client, certificateChainFile: directory + "/edge.pem", privateKeyFile: directory + "/edge.key",
            trustedCAFiles: [directory + "/ca.pem"], serverName: "localhost"))
    return (client, server)
}()

private let genuine = ByteBuffer(string: "genuine plaintext from the client")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTLSRecords(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientTLS = try! TLSHandler(context: contexts.client, eventLoop: client.eventLoop)
    let serverTLS = try! TLSHandler(context: contexts.server, eventLoop: server.eventLoop)
    try! client.pipeline.syncOperations.addHandler(clientTLS)
    try! server.pipeline.syncOperations.addHandler(serverTLS)
    let address = try! SocketAddress(ipAddress: "127.0.0.1", port: 443)
    try! server.connect(to: address).wait()
    try! client.connect(to: address).wait()
    let done = NIOLockedValueBox(false)
    serverTLS.handshakeCompleted.whenSuccess { _ in done.withLockedValue { $0 = true } }
    for _ in 0..<16 where !done.withLockedValue({ $0 }) {
        shuttle(from: client, to: server)
        shuttle(from: server, to: client)
    }
    precondition(done.withLockedValue { $0 }, "the handshake did not complete")
    shuttle(from: server, to: client)

    var expected = ByteBuffer()
    if input[0] & 1 == 1 {  // a genuine record first
        client.writeAndFlush(genuine, promise: nil)
        shuttle(from: client, to: server)
        expected = genuine
    }
    let stride = Int(input[0] >> 1) + 1
    var offset = 1
    while offset < size, server.isActive {
        let end = min(size, offset + stride)
        _ = try? server.writeInbound(ByteBuffer(bytes: input[offset..<end]))
        offset = end
    }
    var delivered = ByteBuffer()
    while var plain = try? server.readInbound(as: ByteBuffer.self) { delivered.writeBuffer(&plain) }
    precondition(delivered.readableBytes <= expected.readableBytes, "octets the client never sent came out as plaintext")
    precondition(delivered == expected.getSlice(at: 0, length: delivered.readableBytes), "plaintext was altered")
    for channel in [client, server] {
        // A channel that closed itself tears its pipeline down on the loop: let that run.
        channel.embeddedEventLoop.run()
        if channel.isActive { _ = try? channel.finish() }
    }
    return 0
}

/// Moves everything `from` wrote into `to` as reads.
private func shuttle(from: EmbeddedChannel, to: EmbeddedChannel) {
    while let bytes = try? from.readOutbound(as: ByteBuffer.self) {
        _ = try? to.writeInbound(bytes)
    }
}
