import NIOCore
import TetherWire

/// What ``Session/produce(into:)`` made.
public struct Produced: Sendable {
    /// A DATA payload to write right after the octets written into the buffer. Large payloads are
    /// handed over as slices of what the application wrote, not copied.
    public var payload: ByteBuffer?
    /// A stream whose buffered octets fell to half the send-buffer limit or below: its writers may
    /// continue (spec §7.2).
    public var writable: StreamID?
    /// A stream this frame's FIN closed (both directions done, spec §6.3).
    public var closed: StreamID?
}

extension Session {
    /// DATA payloads up to this size are copied next to their header; larger ones are returned as
    /// ``Produced/payload`` so the transport can gather them without a copy.
    static let copyPayloadsUpTo = 1_024

    /// Writes the next frame into `buffer`, or returns nil when there is nothing to send now
    /// (spec §8.2): control frames first, then one frame of the stream the scheduler picks.
    ///
    /// Call it only while the transport can take more (spec §8.2 shallow queues).
    public mutating func produce(into buffer: inout ByteBuffer, now: NIODeadline) -> Produced? {
        while let item = self.control.popFirst() {
            if self.writeControl(item, into: &buffer) { return Produced() }
        }
        guard self.isActive else { return nil }
        while let (id, streamClass) = self.scheduler.next() {
            guard let index = self.streams.index(forKey: id) else { continue }  // reset while queued
            self.streams.values[index].isQueued = false
            if let produced = self.produceFrame(at: index, id: id, streamClass: streamClass, into: &buffer, now: now) {
                return produced
            }
        }
        return nil
    }

    /// Writes a control item; false when it turned out to have nothing to say.
    private mutating func writeControl(_ item: ControlItem, into buffer: inout ByteBuffer) -> Bool {
        switch item {
        case .frame(let frame):
            buffer.writeFrame(frame)
        case .connectionCredit:
            self.connectionCreditQueued = false
            buffer.writeFrame(.credit(.connection(limit: self.connectionReceive.advertised)))
        case .streamCredit(let id):
            guard let index = self.streams.index(forKey: id) else { return false }
            self.streams.values[index].creditQueued = false
            buffer.writeFrame(.credit(.stream(id, limit: self.streams.values[index].receive.advertised)))
        case .streamsCredit(let streamClass):
            self.streamsCreditQueued[streamClass] = false
            buffer.writeFrame(.credit(.streams(streamClass, count: self.grantedToPeer[streamClass])))
        }
        return true
    }

    private enum StreamOutput {
        case open
        case data(ByteBuffer, DataFrame.Flags, becameWritable: Bool)
        case blockedOnStream
        case blockedOnConnection
    }

    /// One frame from one stream: its OPEN, then DATA within both credits, with FIN on the last.
    private mutating func produceFrame(
        at index: Dictionary<StreamID, StreamState>.Index,
        id: StreamID,
        streamClass: StreamClass,
        into buffer: inout ByteBuffer,
        now: NIODeadline
    ) -> Produced? {
        let maxPayload = Int(self.peerSettings!.maxFramePayload)
        let connectionAvailable = self.connectionSend.available
        let sendBufferLimit = self.configuration.sendBufferLimit

        // Mutate the stream in place: a copy would duplicate its queue's storage.
        let output: StreamOutput = Self.takeFrame(
            &self.streams.values[index], maxPayload: maxPayload, connectionAvailable: connectionAvailable,
            sendBufferLimit: sendBufferLimit)

        switch output {
        case .open:
            let open = self.pendingOpens.removeValue(forKey: id)!
            let written = buffer.writeFrame(.open(open))
            self.scheduler.charge(streamClass, octets: written)
            self.scheduleIfReady(id)
            return Produced()
        case .blockedOnStream:
            return nil  // CREDIT for the stream schedules it again
        case .blockedOnConnection:
            self.streams.values[index].isQueued = true
            self.connectionBlocked.append(id)
            return nil
        case .data(let payload, let flags, let becameWritable):
            let octets = payload.readableBytes
            self.connectionSend.spend(octets)
            self.counters.dataOctetsSent += octets
            self.scheduler.charge(streamClass, octets: FrameHeader.size + octets)
            var produced = Produced(writable: becameWritable ? id : nil)
            if octets <= Self.copyPayloadsUpTo {
                buffer.writeFrame(.data(DataFrame(streamID: id, flags: flags, payload: payload)))
            } else {
                buffer.writeFrameHeader(FrameHeader(length: octets, type: .data, flags: flags.rawValue, streamID: id))
                produced.payload = payload
            }
            if flags.contains(.fin) {
                self.localFinished(id, now: now)
                if self.streams[id] == nil { produced.closed = id }
            } else {
                self.scheduleIfReady(id)
            }
            return produced
        }
    }

    private static func takeFrame(
        _ stream: inout StreamState, maxPayload: Int, connectionAvailable: UInt64, sendBufferLimit: Int
    ) -> StreamOutput {
        if stream.outbound.openPending {
            stream.outbound.openPending = false
            return .open
        }
        var flags: DataFrame.Flags = []
        var payload = ByteBuffer()
        var becameWritable = false
        if stream.outbound.hasData {
            let limit = min(UInt64(maxPayload), stream.send.available, connectionAvailable)
            guard limit > 0 else {
                return stream.send.available == 0 ? .blockedOnStream : .blockedOnConnection
            }
            let before = stream.outbound.bufferedBytes
            let (taken, endsMessage) = stream.outbound.take(upTo: Int(limit))
            payload = taken
            stream.send.spend(payload.readableBytes)
            if endsMessage { flags.insert(.endMessage) }
            let resumeAt = sendBufferLimit / 2
            becameWritable = before > resumeAt && stream.outbound.bufferedBytes <= resumeAt
        }
        if stream.outbound.finRequested && !stream.outbound.hasData {
            flags.insert(.fin)
            stream.outbound.finRequested = false  // sent: nothing is pending any more
        }
        return .data(payload, flags, becameWritable: becameWritable)
    }

    /// Our FIN went out (spec §6.3).
    private mutating func localFinished(_ id: StreamID, now: NIODeadline) {
        switch self.streams[id]?.phase {
        case .open:
            self.streams[id]!.phase = .halfClosedLocal
            self.armHalfCloseTimeout(id, now: now)
        case .halfClosedRemote:
            self.removeStream(id, ending: .closedByPeer, keepUnconsumed: true)
        case .halfClosedLocal, nil:
            break
        }
    }
}
