import TetherSession
import TetherWire

/// The one error type of the Tether API. Compare by ``code``.
public struct TetherError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { self.name }

        /// The peer, or a stream error, reset the stream (spec §6.5); ``TetherError/errorCode`` says why.
        public static let streamReset = Code(name: "streamReset")
        /// The connection ended; ``TetherError/errorCode`` is the GOAWAY code when there was one.
        public static let connectionClosed = Code(name: "connectionClosed")
        /// A stream could not be opened; ``TetherError/openError`` says why.
        public static let openFailed = Code(name: "openFailed")
        /// This side already half-closed or reset the stream.
        public static let streamClosed = Code(name: "streamClosed")
        /// A message exceeded the reader's limit.
        public static let messageTooLarge = Code(name: "messageTooLarge")
        /// The stream ended in the middle of a message.
        public static let truncatedMessage = Code(name: "truncatedMessage")
        /// Compressed data was invalid or tripped a decompression limit; the stream was reset with
        /// COMPRESSION_ERROR (spec §9.4).
        public static let compression = Code(name: "compression")
        /// The policy refused the stream, or dropped a message whole (spec/POLICY.md); after a
        /// dropped message the stream carries on.
        public static let policyDenied = Code(name: "policyDenied")
        /// The connection cannot do this yet, or not now: its preface has not arrived, or too many
        /// of the same request are outstanding.
        public static let notReady = Code(name: "notReady")
    }

    public let code: Code
    /// The protocol error code, for ``Code/streamReset`` and ``Code/connectionClosed``.
    public let errorCode: ErrorCode?
    public let openError: OpenError?
    public let detail: String

    init(_ code: Code, errorCode: ErrorCode? = nil, openError: OpenError? = nil, _ detail: String) {
        self.code = code
        self.errorCode = errorCode
        self.openError = openError
        self.detail = detail
    }

    static func reset(_ code: ErrorCode) -> TetherError {
        TetherError(.streamReset, errorCode: code, "stream reset with \(code.name)")
    }

    package static func closed(_ code: ErrorCode?, _ detail: String = "connection closed") -> TetherError {
        TetherError(.connectionClosed, errorCode: code, detail)
    }

    public var description: String {
        var text = "\(self.code): \(self.detail)"
        if let errorCode { text += " (\(errorCode.name))" }
        return text
    }
}
