import Logging
import NIOCore
import Tether
import TetherWire

/// One audit record for every stream a relay splices, when it ends (README "Logs and audit"):
/// who opened what — the agent, and the local client, the plane user or the hub listener that
/// asked —, the octets each way, how long it ran and how it ended. Written to the `tether.audit`
/// logger, which the `tether` command sends to its own sink (`audit.file`). Never a payload, never
/// an OPEN or METADATA value but the plane user's name.
struct StreamAudit: Sendable {
    let logger: Logger

    init(identity: String?) {
        var logger = Logger(label: "tether.audit")
        if let identity { logger[metadataKey: "identity"] = "\(identity)" }
        self.logger = logger
    }

    /// A stream as it is asked for.
    struct Opened: Sendable {
        /// The agent whose connection carries it.
        var agent: String
        /// `local:<address>` (a forward's client), `plane:<user>` (the plane, through the hub),
        /// `agent` (the edge, seen from the hub), `listener:<name>` (a hub listener's client).
        var openedBy: String
        var service: String
        var streamClass: StreamClass
        var started = NIODeadline.now()
    }

    /// `stream` ended with `outcome`, or was never spliced because of `failure`.
    func ended(
        _ opened: Opened, stream: StreamID?, outcome: StreamSplicer.Outcome? = nil, failure: String? = nil
    ) {
        let result = failure ?? outcome.map { $0.error.map { "cut: \($0)" } ?? "ok" } ?? "not-spliced"
        self.logger.info(
            "stream ended",
            metadata: [
                "event": "stream", "agent": "\(opened.agent)", "opened-by": "\(opened.openedBy)",
                "stream": "\(stream.map { "\($0.rawValue)" } ?? "-")", "service": "\(opened.service)",
                "class": "\(opened.streamClass.name.lowercased())", "octets-sent": "\(outcome?.toStream ?? 0)",
                "octets-received": "\(outcome?.toSocket ?? 0)",
                "duration-ms": "\((NIODeadline.now() - opened.started).nanoseconds / 1_000_000)", "result": "\(result)",
            ])
    }

    /// The plane user a stream the hub opened names (spec §5.2.1), or `-`.
    static func user(of stream: TetherStreamHandle) -> String {
        stream.metadata[OpenMetadata.userKey].map { String(buffer: $0) } ?? "-"
    }
}
