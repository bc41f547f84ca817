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

    /// The largest control frame: a GOAWAY with the longest debug text (spec §5.7).
    static let largestControlFrame = FrameHeader.size + 8 + GoAwayFrame.maxDebugLength

    /// DATA frames are not cut smaller than this to fit a record; the next record gets them.
    static let smallestCutFrame = 512

    /// Writes the next frame into `buffer`, or returns nil when there is nothing to send now
    /// (spec §8.2): control frames first, then one frame of the stream the scheduler picks.
    ///
    /// - Parameter room: with the default (unlimited), large DATA payloads are returned in
    ///   ``Produced/payload`` instead of being copied. With a finite room — the space left in a TLS
    ///   record — the whole frame is written into `buffer` and is at most `room` octets, DATA frames
    ///   being cut to fit (spec §2.1: frames never straddle records); nil then may also mean
    ///   "nothing fits": the caller sends what it has and asks again with a whole record's room.
    ///
    /// Call it only while the transport can take more (spec §8.2 shallow queues).
    public mutating func produce(into buffer: inout ByteBuffer, now: NIODeadline, room: Int = .max) -> Produced? {
        if !self.control.isEmpty {
            guard room >= Self.largestControlFrame else { return nil }
            while let item = self.control.first {
                if case .open(let id) = item, let open = self.pendingOpens[id], FrameHeader.size + open.payloadSize > room {
                    return nil  // the caller sends what it has and asks again with a whole record
                }
                self.control.removeFirst()
                if self.writeControl(item, into: &buffer) { return Produced() }
            }
        }
        guard self.isActive, room >= FrameHeader.size else { return nil }
        while let (id, streamClass) = self.scheduler.next() {
            guard let index = self.streams.index(forKey: id) else { continue }  // reset while queued
            self.streams.values[index].isQueued = false
            switch self.produceFrame(at: index, id: id, streamClass: streamClass, into: &buffer, now: now, room: room) {
            case .produced(let produced):
                return produced
            case .blocked:
                continue
            case .doesNotFit:
                // Its turn comes again after the caller has sent the current record.
                self.streams.values[index].isQueued = true
                self.scheduler.enqueue(id, streamClass)
                return nil
            }
        }
        return nil
    }

    /// Writes a control item; false when it turned out to have nothing to say.
    private mutating func writeControl(_ item: ControlItem, into buffer: inout ByteBuffer) -> Bool {
        switch item {
        case .frame(let frame):
            buffer.writeFrame(frame)
        case .open(let id):
            guard let open = self.pendingOpens.removeValue(forKey: id) else { return false }
            buffer.writeFrame(.open(open))
            if let index = self.streams.index(forKey: id) {
                self.streams.values[index].outbound.openPending = false
                self.scheduleIfReady(id)
            }
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
        case data(ByteBuffer, DataFrame.Flags, becameWritable: Bool)
        case blockedOnStream
        case blockedOnConnection
        case doesNotFit
    }

    private enum FrameOutcome {
        case produced(Produced)
        case blocked
        case doesNotFit
    }

    /// One frame from one stream: its OPEN, then DATA within both credits, with FIN on the last.
    private mutating func produceFrame(
        at index: Dictionary<StreamID, StreamState>.Index,
        id: StreamID,
        streamClass: StreamClass,
        into buffer: inout ByteBuffer,
        now: NIODeadline,
        room: Int
    ) -> FrameOutcome {
        let maxPayload = Int(self.peerSettings!.maxFramePayload)
        let connectionAvailable = self.connectionSend.available
        let sendBufferLimit = self.configuration.sendBufferLimit
        // Mutate the stream in place: a copy would duplicate its queue's storage.
        let output: StreamOutput = Self.takeFrame(
            &self.streams.values[index], maxPayload: maxPayload, connectionAvailable: connectionAvailable,
            sendBufferLimit: sendBufferLimit, room: room)

        switch output {
        case .blockedOnStream:
            self.counters.creditStallsByClass[streamClass] += 1
            return .blocked  // CREDIT for the stream schedules it again
        case .blockedOnConnection:
            self.counters.creditStallsByClass[streamClass] += 1
            self.streams.values[index].isQueued = true
            self.connectionBlocked.append(id)
            return .blocked
        case .doesNotFit:
            return .doesNotFit
        case .data(let payload, let flags, let becameWritable):
            self.streams.values[index].lastActivity = now  // a frame on the stream (spec §6.4, §12)
            let octets = payload.readableBytes
            self.connectionSend.spend(octets)
            self.counters.dataOctetsSent += octets
            self.counters.dataOctetsSentByClass[streamClass] += octets
            self.scheduler.charge(streamClass, octets: FrameHeader.size + octets)
            var produced = Produced(writable: becameWritable ? id : nil)
            if octets <= Self.copyPayloadsUpTo || room != .max {
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
            return .produced(produced)
        }
    }

    private static func takeFrame(
        _ stream: inout StreamState, maxPayload: Int, connectionAvailable: UInt64, sendBufferLimit: Int, room: Int
    ) -> StreamOutput {
        if stream.outbound.openPending {
            return .blockedOnStream  // its OPEN, queued with CONTROL, schedules it once written
        }
        var flags: DataFrame.Flags = []
        var payload = ByteBuffer()
        var becameWritable = false
        if stream.outbound.hasData {
            var limit = min(UInt64(maxPayload), stream.send.available, connectionAvailable)
            let minimum = UInt64(stream.outbound.nextFrameMinimum)
            guard limit >= minimum else {
                return stream.send.available < minimum ? .blockedOnStream : .blockedOnConnection
            }
            let fits = UInt64(max(0, room - FrameHeader.size))
            if let unit = stream.outbound.firstUnitSize {
                guard UInt64(unit) <= fits else { return .doesNotFit }
            } else if fits < limit {
                // Cut to the record's room, unless that leaves a sliver: then the next record.
                guard fits >= Self.smallestCutFrame || UInt64(stream.outbound.bufferedBytes) <= fits else {
                    return .doesNotFit
                }
                limit = fits
            }
            let before = stream.outbound.bufferedBytes
            let (taken, endsMessage, compression) = stream.outbound.take(upTo: Int(limit))
            payload = taken
            stream.send.spend(payload.readableBytes)
            if endsMessage { flags.insert(.endMessage) }
            flags.formUnion(compression)
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
            self.armHalfCloseTimeout(now: now)
        case .halfClosedRemote:
            self.removeStream(id, ending: .closedByPeer, keepUnconsumed: true)
        case .halfClosedLocal, nil:
            break
        }
    }
}
