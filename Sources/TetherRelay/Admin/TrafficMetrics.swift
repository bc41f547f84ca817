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
///
/// One timer per event loop visits all of that loop's connections (``LoopSweep``): a timer per
/// connection cost a hub with 10,000 idle edges 2,000 scheduled tasks a second.
final class TrafficMetrics: Sendable {
    private let streamsIn: PerClassCounters
    private let streamsOut: PerClassCounters
    private let octetsIn: PerClassCounters
    private let octetsOut: PerClassCounters
    private let stalls: PerClassCounters
    /// Each live connection's DATA octets per second over the last interval, by its channel.
    private let rates = NIOLockedValueBox<[ObjectIdentifier: Throughput]>([:])
    /// The sweep of each event loop that has carried a connection, by the loop.
    private let sweeps = NIOLockedValueBox<[ObjectIdentifier: LoopSweep]>([:])
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
        let sweep = self.sweeps.withLockedValue { sweeps in
            if let sweep = sweeps[ObjectIdentifier(loop)] { return sweep }
            let sweep = LoopSweep(loop: loop, metrics: self)
            sweeps[ObjectIdentifier(loop)] = sweep
            return sweep
        }
        loop.execute {
            sweep.add(connection)
            connection.closeCode.whenComplete { _ in sweep.remove(connection) }
        }
    }

    /// `connection`'s throughput over the last interval; nil before its first interval ended.
    func throughput(of connection: TetherConnection) -> Throughput? {
        self.rates.withLockedValue { $0[ObjectIdentifier(connection.channel)] }
    }

    /// The connections of one event loop, visited together every interval on that loop.
    private final class LoopSweep: Sendable {
        private struct Tracked {
            let connection: TetherConnection
            /// What was last added to the counters.
            var published = SessionCounters()
        }

        private let connections: NIOLoopBoundBox<[ObjectIdentifier: Tracked]>
        private let seconds: Double
        private unowned let metrics: TrafficMetrics

        init(loop: any EventLoop, metrics: TrafficMetrics) {
            self.connections = .makeBoxSendingValue([:], eventLoop: loop)
            self.seconds = Double(metrics.interval.nanoseconds) / 1e9
            self.metrics = metrics
            loop.scheduleRepeatedTask(initialDelay: metrics.interval, delay: metrics.interval) { [weak self] task in
                guard let self else { return task.cancel() }
                self.publishAll()
            }
        }

        func add(_ connection: TetherConnection) {
            self.connections.value[ObjectIdentifier(connection.channel)] = Tracked(connection: connection)
        }

        /// Its last traffic is published and its rate forgotten.
        func remove(_ connection: TetherConnection) {
            guard let tracked = self.connections.value.removeValue(forKey: ObjectIdentifier(connection.channel)) else { return }
            self.metrics.add(connection.countersInEventLoop, since: tracked.published)
            self.metrics.rates.withLockedValue { $0[ObjectIdentifier(connection.channel)] = nil }
        }

        private func publishAll() {
            var rates: [(ObjectIdentifier, Throughput)] = []
            rates.reserveCapacity(self.connections.value.count)
            for (key, tracked) in self.connections.value {
                let now = tracked.connection.countersInEventLoop
                let before = tracked.published
                if now != before {
                    self.metrics.add(now, since: before)
                    self.connections.value[key]?.published = now
                }
                rates.append(
                    (key, Throughput(
                        received: Double(now.dataOctetsReceived - before.dataOctetsReceived) / self.seconds,
                        sent: Double(now.dataOctetsSent - before.dataOctetsSent) / self.seconds)))
            }
            self.metrics.rates.withLockedValue { table in
                for (key, rate) in rates { table[key] = rate }
            }
        }
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
