import Foundation
import NIOCore
import TetherWire
import Testing

@testable import TetherRelay

/// The hub's store of each agent's latest METADATA document (README "Metadata"): bounded per
/// document and in total, whatever the fleet sends.
@Suite struct LatestMetadataTests {
    static func identity(_ agent: Int) -> TetherIdentity { TetherIdentity(tenant: "acme", agentID: "node-\(agent)")! }

    static func send(_ document: String, from agent: Int, to store: LatestMetadataStore, in pieces: Int = 1) {
        let recorder = LatestMetadataStore.Recorder(store: store, identity: Self.identity(agent), service: "inventory")
        let octets = Array(document.utf8)
        let size = max(1, (octets.count + pieces - 1) / pieces)
        for start in stride(from: 0, to: octets.count, by: size) {
            let end = min(octets.count, start + size)
            recorder.read(ByteBuffer(bytes: octets[start..<end]), endsMessage: end == octets.count)
        }
    }

    @Test func theLatestDocumentOfEachAgentIsKeptWholeFromItsPieces() {
        let store = LatestMetadataStore(limits: .init())
        Self.send(#"{"v":1}"#, from: 1, to: store)
        Self.send(#"{"v":2,"pods":["a","b"]}"#, from: 1, to: store, in: 5)
        Self.send(#"{"v":3}"#, from: 2, to: store)
        #expect(store.document(of: Self.identity(1))?.body.map { String(buffer: $0) } == #"{"v":2,"pods":["a","b"]}"#)
        #expect(store.document(of: Self.identity(2))?.body.map { String(buffer: $0) } == #"{"v":3}"#)
        #expect(store.totalOctets == 31)
        #expect(store.document(of: Self.identity(3)) == nil)
    }

    @Test func aDocumentOverTheBoundIsNotKeptButSaid() {
        var limits = HubConfiguration.LatestMetadata()
        limits.maxDocument = 64
        let store = LatestMetadataStore(limits: limits)
        Self.send(#"{"small":true}"#, from: 1, to: store)
        Self.send("{\"big\":\"" + String(repeating: "x", count: 100) + "\"}", from: 1, to: store, in: 7)
        let document = store.document(of: Self.identity(1))
        #expect(document?.body == nil && document?.octets == 110)
        #expect(document?.omitted?.contains("maxDocument") == true)
        #expect(store.totalOctets == 0)
    }

    @Test func pastTheTotalTheLeastRecentlyUpdatedAreForgotten() {
        var limits = HubConfiguration.LatestMetadata()
        limits.maxTotal = 1_000
        let store = LatestMetadataStore(limits: limits)
        let document = "{\"pad\":\"" + String(repeating: "y", count: 90) + "\"}"  // 100 octets
        for agent in 0..<25 { Self.send(document, from: agent, to: store) }
        #expect(store.totalOctets <= 1_000)
        #expect(store.document(of: Self.identity(24))?.body != nil, "the newest stays")
        #expect(store.document(of: Self.identity(0))?.body == nil)
        #expect(store.document(of: Self.identity(0))?.omitted?.contains("maxTotal") == true)
        store.reconfigure(.init())
        Self.send(document, from: 0, to: store)
        #expect(store.document(of: Self.identity(0))?.body != nil)
    }

    @Test func aDocumentThatIsNotJSONIsNotServed() {
        let store = LatestMetadataStore(limits: .init())
        Self.send("{not json", from: 1, to: store)
        #expect(store.document(of: Self.identity(1))?.body == nil)
        #expect(store.document(of: Self.identity(1))?.omitted == "not valid JSON")
    }
}
