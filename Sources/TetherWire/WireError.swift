/// A frame the codec rejects: which spec rule it broke and the error code to send (spec §11).
///
/// Every codec error is a connection error.
public struct WireError: Error, Hashable, Sendable {
    /// The rule that was broken. Compared by ``name``.
    public struct Reason: Hashable, Sendable {
        public let name: String
        public let code: ErrorCode
        /// The spec section of the rule, such as `§4.2`.
        public let section: String

        init(_ name: String, _ code: ErrorCode, _ section: String) {
            self.name = name
            self.code = code
            self.section = section
        }

        public static let badPreface = Reason("badPreface", .protocolError, "§3.1")
        public static let frameTooLarge = Reason("frameTooLarge", .frameSizeError, "§4.2")
        public static let wrongStream = Reason("wrongStream", .protocolError, "§4.3")
        public static let badPayloadSize = Reason("badPayloadSize", .frameSizeError, "§5")
        public static let emptyCompressedData = Reason("emptyCompressedData", .protocolError, "§5.1")
        public static let resetWithoutCompression = Reason("resetWithoutCompression", .protocolError, "§5.1")
        public static let openTooLarge = Reason("openTooLarge", .frameSizeError, "§5.2")
        public static let openTruncated = Reason("openTruncated", .frameSizeError, "§5.2")
        public static let invalidClass = Reason("invalidClass", .protocolError, "§5.2")
        public static let invalidService = Reason("invalidService", .protocolError, "§5.2")
        public static let invalidMetadataKey = Reason("invalidMetadataKey", .protocolError, "§5.2")
        public static let duplicateMetadataKey = Reason("duplicateMetadataKey", .protocolError, "§5.2")
        public static let invalidCreditClass = Reason("invalidCreditClass", .protocolError, "§5.4")
        public static let creditTooLarge = Reason("creditTooLarge", .flowControlError, "§5.4")
        public static let debugTooLong = Reason("debugTooLong", .frameSizeError, "§5.7")
        public static let debugNotUTF8 = Reason("debugNotUTF8", .protocolError, "§5.7")
        public static let duplicateSetting = Reason("duplicateSetting", .settingsError, "§3.3")
        public static let settingOutOfRange = Reason("settingOutOfRange", .settingsError, "§3.3")

        public static let all: [Reason] = [
            .badPreface, .frameTooLarge, .wrongStream, .badPayloadSize, .emptyCompressedData, .resetWithoutCompression,
            .openTooLarge,
            .openTruncated, .invalidClass, .invalidService, .invalidMetadataKey, .duplicateMetadataKey,
            .invalidCreditClass, .creditTooLarge, .debugTooLong, .debugNotUTF8, .duplicateSetting, .settingOutOfRange,
        ]
    }

    public let reason: Reason
    /// What exactly was wrong, for logs.
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    /// The code to send in GOAWAY.
    public var code: ErrorCode { self.reason.code }
}

extension WireError: CustomStringConvertible {
    public var description: String {
        "\(self.reason.code.name) (\(self.reason.name), spec \(self.reason.section)): \(self.detail)"
    }
}
