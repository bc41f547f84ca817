import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TetherWire

/// The latest METADATA document each agent sent (README "Metadata"), for
/// `GET /v1/agents/{tenant}/{agent}/metadata`: what the plane's UI shows without asking its own
/// backend. Documents arrive already filtered by the node's policy. Bounded per document and in
/// total (``HubConfiguration/LatestMetadata``), so that no fleet can fill the hub's memory: a
/// document over the bound is not kept (its size and time are), and past the total the least
/// recently updated agents' documents are forgotten.
public final class LatestMetadataStore: Sendable {
    public struct Document: Sendable {
        public var service: String
        public var receivedAt: Date
        /// The document's length, kept or not.
        public var octets: Int
        /// The JSON document as the edge sent it; nil when it is not kept, and `omitted` says why.
        public var body: ByteBuffer?
        public var omitted: String?
    }

    private struct State {
        var limits: HubConfiguration.LatestMetadata
        var documents: [TetherIdentity: Document] = [:]
        var total = 0
    }

    private let state: NIOLockedValueBox<State>

    init(limits: HubConfiguration.LatestMetadata) {
        self.state = NIOLockedValueBox(State(limits: limits))
    }

    /// The bounds in force from now on (SIGHUP); a smaller total forgets documents at once.
    func reconfigure(_ limits: HubConfiguration.LatestMetadata) {
        self.state.withLockedValue { state in
            state.limits = limits
            Self.evict(&state)
        }
    }

    public func document(of identity: TetherIdentity) -> Document? {
        self.state.withLockedValue { $0.documents[identity] }
    }

    /// Octets held in all documents now.
    public var totalOctets: Int { self.state.withLockedValue { $0.total } }

    func keep(_ document: Document, of identity: TetherIdentity) {
        self.state.withLockedValue { state in
            var document = document
            if document.octets > state.limits.maxDocument {
                document.body = nil
                document.omitted = "longer than latestMetadata.maxDocument (\(state.limits.maxDocument) octets)"
            }
            state.total -= state.documents[identity]?.body?.readableBytes ?? 0
            state.documents[identity] = document
            state.total += document.body?.readableBytes ?? 0
            Self.evict(&state)
        }
    }

    private static func evict(_ state: inout State) {
        while state.total > state.limits.maxTotal,
            let oldest = state.documents.lazy.filter({ $0.value.body != nil }).min(by: { $0.value.receivedAt < $1.value.receivedAt })
        {
            state.total -= oldest.value.body?.readableBytes ?? 0
            state.documents[oldest.key]?.body = nil
            state.documents[oldest.key]?.omitted = "forgotten to stay within latestMetadata.maxTotal (\(state.limits.maxTotal) octets)"
        }
    }

    /// Gathers one METADATA stream's messages into documents (a message may come in several
    /// reads); called by the splicer on one event loop, in order.
    final class Recorder: @unchecked Sendable {
        private let store: LatestMetadataStore
        private let identity: TetherIdentity
        private let service: String
        private var pending = ByteBuffer()
        private var octets = 0

        init(store: LatestMetadataStore, identity: TetherIdentity, service: String) {
            self.store = store
            self.identity = identity
            self.service = service
        }

        func read(_ bytes: ByteBuffer, endsMessage: Bool) {
            self.octets += bytes.readableBytes
            // Nothing past the bound is held: a longer document is only counted.
            if self.octets <= self.store.state.withLockedValue({ $0.limits.maxDocument }) {
                var bytes = bytes
                self.pending.writeBuffer(&bytes)
            }
            guard endsMessage else { return }
            var document = Document(service: self.service, receivedAt: Date(), octets: self.octets, body: self.pending)
            // The API serves the document inside its own JSON: an edge's must be JSON indeed.
            if document.octets <= self.pending.readableBytes,
                (try? JSONSerialization.jsonObject(with: Data(self.pending.readableBytesView), options: [.fragmentsAllowed])) == nil
            {
                document.body = nil
                document.omitted = "not valid JSON"
            }
            self.store.keep(document, of: self.identity)
            self.pending = ByteBuffer()
            self.octets = 0
        }
    }
}
