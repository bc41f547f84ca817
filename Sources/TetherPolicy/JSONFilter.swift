/// Why a METADATA message was dropped whole (spec/POLICY.md §5). Reasons name keys, never values.
public enum DropReason: Error, Sendable, Equatable, CustomStringConvertible {
    case tooLarge(limit: Int)
    case invalidJSON(offset: Int, String)
    case notAnObject
    case duplicateKey(String)
    case keyContainsDot(String)
    case tooDeep(limit: Int)

    /// A short, fixed name: the metrics label and the audit log's `reason`.
    public var name: String {
        switch self {
        case .tooLarge: "too-large"
        case .invalidJSON: "invalid-json"
        case .notAnObject: "not-an-object"
        case .duplicateKey: "duplicate-key"
        case .keyContainsDot: "key-contains-dot"
        case .tooDeep: "too-deep"
        }
    }

    public var description: String {
        switch self {
        case .tooLarge(let limit): "larger than \(limit) octets"
        case .invalidJSON(let offset, let what): "not valid JSON at octet \(offset): \(what)"
        case .notAnObject: "not a JSON object"
        case .duplicateKey(let key): "the key \"\(key)\" appears twice in one object"
        case .keyContainsDot(let key): "the key \"\(key)\" contains a dot"
        case .tooDeep(let limit): "nested deeper than \(limit)"
        }
    }
}

/// What the filter removed from a message that passed.
public struct RemovedFields: Sendable, Equatable {
    /// Members and elements removed.
    public internal(set) var count = 0
    /// The distinct paths removed, with `[]` for array elements (`pods[].env`); at most
    /// ``JSONFilter/namedPaths`` of them.
    public internal(set) var paths: [String] = []

    public init() {}
}

/// The METADATA field filter (spec/POLICY.md §5): one pass over a JSON object that validates it
/// strictly and copies out only what the patterns allow. Allowed values are copied verbatim;
/// keys are matched after unescaping.
public struct JSONFilter: Sendable {
    public static let maxDepth = 32
    public static let namedPaths = 16
    public let matcher: FieldMatcher
    public let maxBytes: Int

    public init(allowing patterns: [FieldPattern], maxBytes: Int = 1 << 20) {
        self.matcher = FieldMatcher(patterns)
        self.maxBytes = maxBytes
    }

    /// Filters one message, appending what passes to `output`. Throws ``DropReason`` — and
    /// appends nothing — when the message must be dropped whole.
    public func filter(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws(DropReason) -> RemovedFields {
        guard input.count <= self.maxBytes else { throw .tooLarge(limit: self.maxBytes) }
        let mark = output.count
        output.reserveCapacity(mark + input.count)
        var run = FilterRun(input: input.assumingMemoryBound(to: UInt8.self), matcher: self.matcher)
        swap(&run.output, &output)
        defer { swap(&run.output, &output) }
        do {
            try run.document()
        } catch {
            run.output.removeSubrange(mark...)
            throw error
        }
        return run.removed
    }

    /// Filters one message held in an array.
    public func filter(_ input: [UInt8]) throws(DropReason) -> (output: [UInt8], removed: RemovedFields) {
        var output: [UInt8] = []
        let result = input.withUnsafeBytes { bytes in Result { () throws(DropReason) in try self.filter(bytes, into: &output) } }
        return (output, try result.get())
    }
}

/// One run of the filter over one document.
private struct FilterRun {
    let input: UnsafeBufferPointer<UInt8>
    let matcher: FieldMatcher
    var index = 0
    var output: [UInt8] = []
    var removed = RemovedFields()

    /// Matcher states of the containers being filtered.
    var states: [UInt32] = []
    /// Keys of the objects open right now, for the duplicate check.
    var keys: [Key] = []
    /// Unescaped octets of keys that had escapes.
    var unescaped: [UInt8] = []
    /// The path to the container being filtered, for naming what is removed.
    var path: [Key?] = []
    var pathHashes: [Int] = []
    var removedHashes: [Int] = []

    struct Key {
        var hash: Int
        /// The unescaped name: in `input`, or in `unescaped` when it had escapes.
        var start: Int
        var count: Int
        var escaped: Bool
        /// The key as written, quotes included.
        var raw: Range<Int>
    }

    init(input: UnsafeBufferPointer<UInt8>, matcher: FieldMatcher) {
        self.input = input
        self.matcher = matcher
    }

    private func invalid(_ what: String) -> DropReason {
        .invalidJSON(offset: self.index, what)
    }

    private var next: UInt8? { self.index < self.input.count ? self.input[self.index] : nil }

    mutating func document() throws(DropReason) {
        self.skipWhitespace()
        guard self.next == UInt8(ascii: "{") else {
            try self.value(depth: 0, states: nil)  // a scalar or an array: valid JSON, but not ours
            throw .notAnObject
        }
        switch self.matcher.start(&self.states) {
        case .all:
            let start = self.index
            try self.object(depth: 1, states: nil)
            self.output.append(contentsOf: UnsafeBufferPointer(rebasing: self.input[start..<self.index]))
        case .none, .partial:
            try self.object(depth: 1, states: 0..<self.states.count)
        }
        self.skipWhitespace()
        guard self.index == self.input.count else { throw self.invalid("data after the object") }
    }

    /// Validates a value; `states` non-nil filters the object or array that starts here into
    /// `output`. `depth` is the depth of the enclosing container (the document's object is 1).
    private mutating func value(depth: Int, states: Range<Int>?) throws(DropReason) {
        guard let byte = self.next else { throw self.invalid("the document ends where a value belongs") }
        switch byte {
        case UInt8(ascii: "{"):
            guard depth < JSONFilter.maxDepth else { throw .tooDeep(limit: JSONFilter.maxDepth) }
            try self.object(depth: depth + 1, states: states)
        case UInt8(ascii: "["):
            guard depth < JSONFilter.maxDepth else { throw .tooDeep(limit: JSONFilter.maxDepth) }
            try self.array(depth: depth + 1, states: states)
        case UInt8(ascii: "\""):
            _ = try self.string()
        case UInt8(ascii: "t"):
            try self.literal("true")
        case UInt8(ascii: "f"):
            try self.literal("false")
        case UInt8(ascii: "n"):
            try self.literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try self.number()
        default:
            throw self.invalid("a value must start here")
        }
    }

    private var atContainer: Bool { self.next == UInt8(ascii: "{") || self.next == UInt8(ascii: "[") }

    private mutating func object(depth: Int, states: Range<Int>?) throws(DropReason) {
        self.index += 1
        let keyBase = self.keys.count
        var kept = 0
        if states != nil { self.output.append(UInt8(ascii: "{")) }
        self.skipWhitespace()
        if self.next == UInt8(ascii: "}") {
            self.index += 1
        } else {
            while true {
                guard self.next == UInt8(ascii: "\"") else { throw self.invalid("a key must start here") }
                let key = try self.key()
                self.skipWhitespace()
                guard self.next == UInt8(ascii: ":") else { throw self.invalid("`:` must follow a key") }
                self.index += 1
                self.skipWhitespace()
                if let states {
                    let mark = self.states.count
                    let match = self.match(key, from: states)
                    try self.member(key: key, match: match, depth: depth, states: mark..<self.states.count, kept: &kept)
                    self.states.removeSubrange(mark...)
                } else {
                    try self.value(depth: depth, states: nil)
                }
                if try self.closes(UInt8(ascii: "}")) { break }
            }
        }
        try self.checkDuplicates(from: keyBase)
        self.keys.removeSubrange(keyBase...)
        if states != nil { self.output.append(UInt8(ascii: "}")) }
    }

    private mutating func array(depth: Int, states: Range<Int>?) throws(DropReason) {
        self.index += 1
        var kept = 0
        // Every element is at the same path: match once.
        let mark = self.states.count
        let match = states.map { self.matcher.element(from: $0, &self.states) }
        if states != nil { self.output.append(UInt8(ascii: "[")) }
        self.skipWhitespace()
        if self.next == UInt8(ascii: "]") {
            self.index += 1
        } else {
            while true {
                if let match {
                    try self.member(key: nil, match: match, depth: depth, states: mark..<self.states.count, kept: &kept)
                } else {
                    try self.value(depth: depth, states: nil)
                }
                if try self.closes(UInt8(ascii: "]")) { break }
            }
        }
        self.states.removeSubrange(mark...)
        if states != nil { self.output.append(UInt8(ascii: "]")) }
    }

    /// After a member or element: `,` (another follows) or `close` (the container ends here).
    private mutating func closes(_ close: UInt8) throws(DropReason) -> Bool {
        self.skipWhitespace()
        switch self.next {
        case UInt8(ascii: ","):
            self.index += 1
            self.skipWhitespace()
            return false
        case close:
            self.index += 1
            return true
        default:
            throw self.invalid("`,` or `\(Character(Unicode.Scalar(close)))` must follow")
        }
    }

    /// One member (`key` non-nil) or element of a container being filtered.
    private mutating func member(
        key: Key?, match: FieldMatch, depth: Int, states: Range<Int>, kept: inout Int
    ) throws(DropReason) {
        switch match {
        case .all:
            self.emitMemberStart(key, kept: &kept)
            let start = self.index
            try self.value(depth: depth, states: nil)
            self.output.append(contentsOf: UnsafeBufferPointer(rebasing: self.input[start..<self.index]))
        case .partial where self.atContainer:
            self.emitMemberStart(key, kept: &kept)
            self.path.append(key)
            self.pathHashes.append(self.stepHash(key))
            try self.value(depth: depth, states: states)
            self.path.removeLast()
            self.pathHashes.removeLast()
        case .partial, .none:
            try self.value(depth: depth, states: nil)
            self.recordRemoved(key)
        }
    }

    private mutating func emitMemberStart(_ key: Key?, kept: inout Int) {
        if kept > 0 { self.output.append(UInt8(ascii: ",")) }
        kept += 1
        if let key {
            self.output.append(contentsOf: UnsafeBufferPointer(rebasing: self.input[key.raw]))
            self.output.append(UInt8(ascii: ":"))
        }
    }

    // MARK: Naming what is removed

    private func stepHash(_ key: Key?) -> Int {
        var hasher = Hasher()
        hasher.combine(self.pathHashes.last ?? 0)
        hasher.combine(key?.hash ?? 0x5B5D)  // "[]"
        return hasher.finalize()
    }

    private mutating func recordRemoved(_ key: Key?) {
        self.removed.count += 1
        guard self.removedHashes.count < JSONFilter.namedPaths else { return }
        let hash = self.stepHash(key)
        guard !self.removedHashes.contains(hash) else { return }
        self.removedHashes.append(hash)
        var name = ""
        for step in self.path + [key] {
            if let step {
                if !name.isEmpty { name += "." }
                name += self.string(of: step)
            } else {
                name += "[]"
            }
        }
        self.removed.paths.append(name)
    }

    private func string(of key: Key) -> String {
        self.withName(key) { String(decoding: $0, as: UTF8.self) }
    }

    /// The unescaped octets of a key.
    private func withName<T>(_ key: Key, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        let range = key.start..<key.start + key.count
        guard key.escaped else { return body(UnsafeBufferPointer(rebasing: self.input[range])) }
        return self.unescaped.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[range])) }
    }

    /// Pushes the matcher states a key leads to.
    private mutating func match(_ key: Key, from states: Range<Int>) -> FieldMatch {
        let range = key.start..<key.start + key.count
        guard key.escaped else {
            return self.matcher.key(UnsafeBufferPointer(rebasing: self.input[range]), from: states, &self.states)
        }
        let name = Array(self.unescaped[range])
        return name.withUnsafeBufferPointer { self.matcher.key($0, from: states, &self.states) }
    }

    // MARK: Keys

    /// Reads a key, unescaping it if it has escapes, and remembers it for the duplicate check.
    private mutating func key() throws(DropReason) -> Key {
        let rawStart = self.index
        let (start, end, escaped, dot) = try self.string()
        var key = Key(hash: 0, start: start, count: end - start, escaped: escaped, raw: rawStart..<self.index)
        var hasher = Hasher()
        if escaped {
            key.start = self.unescaped.count
            self.unescape(start..<end)
            key.count = self.unescaped.count - key.start
            self.unescaped.withUnsafeBytes { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0[key.start...])) }
            if self.unescaped[key.start...].contains(UInt8(ascii: ".")) { throw .keyContainsDot(self.string(of: key)) }
        } else {
            hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(self.input)[start..<end]))
            if dot { throw .keyContainsDot(self.string(of: key)) }
        }
        key.hash = hasher.finalize()
        self.keys.append(key)
        return key
    }

    private func sameName(_ a: Key, _ b: Key) -> Bool {
        guard a.count == b.count else { return false }
        return self.withName(a) { first in self.withName(b) { second in first.elementsEqual(second) } }
    }

    /// A duplicate among the keys of the object that just closed: few keys are compared pairwise,
    /// many are sorted by (seeded) hash first, so a hostile object costs O(n log n).
    private mutating func checkDuplicates(from base: Int) throws(DropReason) {
        let count = self.keys.count - base
        guard count > 1 else { return }
        if count <= 8 {
            for i in base..<self.keys.count {
                for j in (i + 1)..<self.keys.count where self.keys[i].hash == self.keys[j].hash {
                    if self.sameName(self.keys[i], self.keys[j]) { throw .duplicateKey(self.string(of: self.keys[i])) }
                }
            }
            return
        }
        self.keys[base...].sort { $0.hash < $1.hash }
        var i = base
        while i < self.keys.count {
            var j = i + 1
            while j < self.keys.count, self.keys[j].hash == self.keys[i].hash {
                for k in i..<j where self.sameName(self.keys[k], self.keys[j]) {
                    throw .duplicateKey(self.string(of: self.keys[j]))
                }
                j += 1
            }
            i = j
        }
    }

    /// Appends the unescaped octets of a validated string body to `unescaped`.
    private mutating func unescape(_ range: Range<Int>) {
        var index = range.lowerBound
        while index < range.upperBound {
            let byte = self.input[index]
            guard byte == UInt8(ascii: "\\") else {
                self.unescaped.append(byte)
                index += 1
                continue
            }
            let kind = self.input[index + 1]
            index += 2
            switch kind {
            case UInt8(ascii: "b"): self.unescaped.append(0x08)
            case UInt8(ascii: "f"): self.unescaped.append(0x0C)
            case UInt8(ascii: "n"): self.unescaped.append(0x0A)
            case UInt8(ascii: "r"): self.unescaped.append(0x0D)
            case UInt8(ascii: "t"): self.unescaped.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = self.hex4(at: index)
                index += 4
                if scalar >= 0xD800 && scalar < 0xDC00 {  // validated: a low surrogate follows
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (self.hex4(at: index + 2) - 0xDC00)
                    index += 6
                }
                self.unescaped.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
            default: self.unescaped.append(kind)  // \" \\ \/
            }
        }
    }

    private func hex4(at index: Int) -> UInt32 {
        var value: UInt32 = 0
        for offset in 0..<4 { value = value << 4 | UInt32(Self.hexValue(self.input[index + offset])!) }
        return value
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: Scalars

    private mutating func skipWhitespace() {
        while self.index < self.input.count {
            switch self.input[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    private mutating func literal(_ word: StaticString) throws(DropReason) {
        let count = word.utf8CodeUnitCount
        guard self.index + count <= self.input.count,
            UnsafeBufferPointer(rebasing: self.input[self.index..<self.index + count]).elementsEqual(
                UnsafeBufferPointer(start: word.utf8Start, count: count))
        else { throw self.invalid("not a JSON literal") }
        self.index += count
    }

    private mutating func digits() throws(DropReason) {
        let start = self.index
        while let byte = self.next, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { self.index += 1 }
        guard self.index > start else { throw self.invalid("a digit must follow") }
    }

    private mutating func number() throws(DropReason) {
        if self.next == UInt8(ascii: "-") { self.index += 1 }
        if self.next == UInt8(ascii: "0") {
            self.index += 1
        } else {
            try self.digits()
        }
        if self.next == UInt8(ascii: ".") {
            self.index += 1
            try self.digits()
        }
        if self.next == UInt8(ascii: "e") || self.next == UInt8(ascii: "E") {
            self.index += 1
            if self.next == UInt8(ascii: "+") || self.next == UInt8(ascii: "-") { self.index += 1 }
            try self.digits()
        }
    }

    /// Validates a string (escapes, control characters, UTF-8, surrogate pairs) and returns the
    /// range of its body, whether it has escapes, and whether it has a literal dot.
    private mutating func string() throws(DropReason) -> (start: Int, end: Int, escaped: Bool, dot: Bool) {
        self.index += 1
        let start = self.index
        var escaped = false
        var dot = false
        while true {
            guard self.index < self.input.count else { throw self.invalid("an unterminated string") }
            let byte = self.input[self.index]
            switch byte {
            case UInt8(ascii: "\""):
                self.index += 1
                return (start, self.index - 1, escaped, dot)
            case UInt8(ascii: "\\"):
                escaped = true
                try self.escape()
            case 0..<0x20:
                throw self.invalid("a control character in a string")
            case UInt8(ascii: "."):
                dot = true
                self.index += 1
            case 0x20..<0x80:
                self.index += 1
            default:
                try self.utf8Sequence()
            }
        }
    }

    private mutating func escape() throws(DropReason) {
        guard self.index + 1 < self.input.count else { throw self.invalid("an unterminated escape") }
        switch self.input[self.index + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            self.index += 2
        case UInt8(ascii: "u"):
            let unit = try self.unicodeEscape()
            if unit >= 0xDC00 && unit < 0xE000 { throw self.invalid("a lone low surrogate") }
            if unit >= 0xD800 && unit < 0xDC00 {
                guard self.index + 1 < self.input.count, self.input[self.index] == UInt8(ascii: "\\"),
                    self.input[self.index + 1] == UInt8(ascii: "u")
                else { throw self.invalid("a high surrogate without its low half") }
                let low = try self.unicodeEscape()
                guard low >= 0xDC00 && low < 0xE000 else { throw self.invalid("a high surrogate without its low half") }
            }
        default:
            throw self.invalid("an unknown escape")
        }
    }

    /// `\uXXXX` at `index`: its value, with `index` past it.
    private mutating func unicodeEscape() throws(DropReason) -> UInt32 {
        guard self.index + 6 <= self.input.count else { throw self.invalid("a short \\u escape") }
        var value: UInt32 = 0
        for offset in 2..<6 {
            guard let digit = Self.hexValue(self.input[self.index + offset]) else { throw self.invalid("a bad \\u escape") }
            value = value << 4 | UInt32(digit)
        }
        self.index += 6
        return value
    }

    /// One multi-octet UTF-8 sequence, checked as Unicode's table 3-7 says (no overlong forms, no
    /// surrogates, nothing past U+10FFFF).
    private mutating func utf8Sequence() throws(DropReason) {
        let lead = self.input[self.index]
        let (length, low, high): (Int, UInt8, UInt8)
        switch lead {
        case 0xC2...0xDF: (length, low, high) = (2, 0x80, 0xBF)
        case 0xE0: (length, low, high) = (3, 0xA0, 0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: (length, low, high) = (3, 0x80, 0xBF)
        case 0xED: (length, low, high) = (3, 0x80, 0x9F)
        case 0xF0: (length, low, high) = (4, 0x90, 0xBF)
        case 0xF1...0xF3: (length, low, high) = (4, 0x80, 0xBF)
        case 0xF4: (length, low, high) = (4, 0x80, 0x8F)
        default: throw self.invalid("not UTF-8")
        }
        guard self.index + length <= self.input.count else { throw self.invalid("not UTF-8") }
        let second = self.input[self.index + 1]
        guard second >= low && second <= high else { throw self.invalid("not UTF-8") }
        for offset in 2..<length {
            guard self.input[self.index + offset] & 0xC0 == 0x80 else { throw self.invalid("not UTF-8") }
        }
        self.index += length
    }
}
