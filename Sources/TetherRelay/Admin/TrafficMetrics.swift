import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Tether
import TetherSession
import TetherWire

/// Each connection's traffic by stream class, as swift-metrics counters (README "Admin
/// endpoints"): streams opened each way, DATA octets each way, credit stalls. The session counts
/// them on its own (``SessionCounters``), for free on the data path; this copies what grew into
/// the counters every `interval` and once more when the connection closes. Labels are the class
/// and the direction only — never a tenant or an agent — so the hub's series stay bounded
/// whatever the fleet's size.
final class TrafficMetrics: Sendable {
    private let streamsIn: PerClassCounters
    private let streamsOut: PerClassCounters
    private let octetsIn: PerClassCounters
    private let octetsOut: PerClassCounters
    private let stalls: PerClassCounters
    /// Each live connection's DATA octets per second over the last interval, by its channel.
    private let rates = NIOLockedValueBox<[ObjectIdentifier: Throughput]>([:])
    let interval: TimeAmount

    /// DATA octets per second each way.
    struct Throughput: Sendable, Equatable {
        var received: Double
        var sent: Double
    }

    init(interval: TimeAmount = .seconds(5), factory: any MetricsFactory = MetricsSystem.factory) {
        self.interval = interval
        self.streamsIn = PerClassCounters("tether_streams_opened_total", direction: "in", factory: factory)
        self.streamsOut = PerClassCounters("tether_streams_opened_total", direction: "out", factory: factory)
        self.octetsIn = PerClassCounters("tether_stream_octets_total", direction: "in", factory: factory)
        self.octetsOut = PerClassCounters("tether_stream_octets_total", direction: "out", factory: factory)
        self.stalls = PerClassCounters("tether_credit_stalls_total", direction: nil, factory: factory)
    }

    /// Publishes `connection`'s traffic from now until it closes.
    func track(_ connection: TetherConnection) {
        let loop = connection.eventLoop
        // Read and written only on the connection's loop, where its counters are read too.
        let published = NIOLoopBoundBox.makeBoxSendingValue(SessionCounters(), eventLoop: loop)
        let key = ObjectIdentifier(connection.channel)
        let seconds = Double(self.interval.nanoseconds) / 1e9
        // Set once the connection closed: a sample that completes after it removes the rate.
        let ended = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: loop)
        let publish: @Sendable () -> Void = {
            connection.countersNow().whenSuccess { now in
                let before = published.value
                self.add(now, since: before)
                published.value = now
                let rate = Throughput(
                    received: Double(now.dataOctetsReceived - before.dataOctetsReceived) / seconds,
                    sent: Double(now.dataOctetsSent - before.dataOctetsSent) / seconds)
                self.rates.withLockedValue { $0[key] = ended.value ? nil : rate }
            }
        }
        let task = loop.scheduleRepeatedTask(initialDelay: self.interval, delay: self.interval) { _ in publish() }
        connection.closeCode.whenComplete { _ in
            ended.value = true
            task.cancel()
            self.rates.withLockedValue { $0[key] = nil }
            publish()
        }
    }

    /// `connection`'s throughput over the last interval; nil before its first interval ended.
    func throughput(of connection: TetherConnection) -> Throughput? {
        self.rates.withLockedValue { $0[ObjectIdentifier(connection.channel)] }
    }

    private func add(_ now: SessionCounters, since before: SessionCounters) {
        for streamClass in StreamClass.allCases {
            self.streamsIn.add(streamClass, now.streamsOpenedByPeerByClass[streamClass] - before.streamsOpenedByPeerByClass[streamClass])
            self.streamsOut.add(streamClass, now.streamsOpenedLocallyByClass[streamClass] - before.streamsOpenedLocallyByClass[streamClass])
            self.octetsIn.add(streamClass, now.dataOctetsReceivedByClass[streamClass] - before.dataOctetsReceivedByClass[streamClass])
            self.octetsOut.add(streamClass, now.dataOctetsSentByClass[streamClass] - before.dataOctetsSentByClass[streamClass])
            self.stalls.add(streamClass, now.creditStallsByClass[streamClass] - before.creditStallsByClass[streamClass])
        }
    }

    /// One counter per class, made once.
    private struct PerClassCounters: Sendable {
        let counters: [Counter]

        init(_ label: String, direction: String?, factory: any MetricsFactory) {
            self.counters = StreamClass.allCases.map { streamClass in
                var dimensions = [("class", streamClass.name.lowercased())]
                if let direction { dimensions.append(("direction", direction)) }
                return Counter(label: label, dimensions: dimensions, factory: factory)
            }
        }

        func add(_ streamClass: StreamClass, _ amount: Int) {
            guard amount > 0 else { return }
            self.counters[streamClass.index].increment(by: amount)
        }
    }
}
