import Foundation
import Metrics
import Tether
import TetherTLS
import TetherWire

/// Gauges both relays set at scrape time.
enum RelayGauges {
    /// `tether_certificate_expiry_seconds`: until the relay's own certificate expires (negative
    /// once it has).
    static func recordCertificateExpiry(_ tls: TLSContextStore) {
        guard let notAfter = tls.current.certificateNotAfter else { return }
        Gauge(label: "tether_certificate_expiry_seconds").record(Double(notAfter) - Date().timeIntervalSince1970)
    }
}

/// One class's streams on a relay's connections, for `/v1/state`.
public struct RelayStreams: Encodable, Sendable, Equatable {
    public var open = 0
    public var openedIn = 0
    public var openedOut = 0
    public var octetsIn = 0
    public var octetsOut = 0

    /// Keyed by class name (`bulk`), summed over `connections`; a connection that closes meanwhile is left out.
    static func byClass(of connections: [TetherConnection]) async -> [String: RelayStreams] {
        var streams: [String: RelayStreams] = [:]
        for connection in connections {
            guard let counters = try? await connection.counters(), let open = try? await connection.activeStreams() else { continue }
            for streamClass in StreamClass.allCases {
                streams[streamClass.name.lowercased(), default: RelayStreams()].add(
                    RelayStreams(
                        open: open[streamClass], openedIn: counters.streamsOpenedByPeerByClass[streamClass],
                        openedOut: counters.streamsOpenedLocallyByClass[streamClass],
                        octetsIn: counters.dataOctetsReceivedByClass[streamClass],
                        octetsOut: counters.dataOctetsSentByClass[streamClass]))
            }
        }
        return streams
    }

    private mutating func add(_ other: RelayStreams) {
        self.open += other.open
        self.openedIn += other.openedIn
        self.openedOut += other.openedOut
        self.octetsIn += other.octetsIn
        self.octetsOut += other.octetsOut
    }
}
