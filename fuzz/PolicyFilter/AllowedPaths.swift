// An independent check of the filter's output (spec/POLICY.md §4–§5), written from the spec and
// sharing nothing with TetherPolicy: it reads the output JSON itself and walks every path in it.
// A scalar may appear only where a pattern matches its path or a path above it (a match allows the
// whole value); a key may appear only on the way to such a match.

/// One step of a path through a document.
enum PathStep: Equatable {
    case key([UInt8])
    case element
}

/// A field pattern as spec/POLICY.md §4 writes it: keys split at `.`, `*` any one key, `**` any
/// path of zero or more steps, `[]` after a segment one array element.
struct Pattern {
    enum Step {
        case key([UInt8])
        case anyKey
        case anyDepth
        case element
    }

    let steps: [Step]

    init(_ text: String) {
        var steps: [Step] = []
        for segment in text.split(separator: ".", omittingEmptySubsequences: false) {
            var base = Substring(segment)
            var elements = 0
            while base.hasSuffix("[]") {
                base = base.dropLast(2)
                elements += 1
            }
            switch base {
            case "*": steps.append(.anyKey)
            case "**": steps.append(.anyDepth)
            default: steps.append(.key(Array(base.utf8)))
            }
            steps += Array(repeating: .element, count: elements)
        }
        self.steps = steps
    }

    /// Whether the pattern matches `path` exactly.
    func matches(_ path: ArraySlice<PathStep>) -> Bool { self.walk(0, path, prefixOnly: false) }

    /// Whether some longer path that starts with `path` could match.
    func leadsBelow(_ path: ArraySlice<PathStep>) -> Bool { self.walk(0, path, prefixOnly: true) }

    private func walk(_ index: Int, _ path: ArraySlice<PathStep>, prefixOnly: Bool) -> Bool {
        guard let first = path.first else { return prefixOnly || self.steps[index...].allSatisfy { if case .anyDepth = $0 { true } else { false } } }
        guard index < self.steps.count else { return false }
        let rest = path.dropFirst()
        switch (self.steps[index], first) {
        case (.anyDepth, _):
            return self.walk(index + 1, path, prefixOnly: prefixOnly) || self.walk(index, rest, prefixOnly: prefixOnly)
        case (.anyKey, .key), (.element, .element):
            return self.walk(index + 1, rest, prefixOnly: prefixOnly)
        case (.key(let name), .key(let key)) where name == key:
            return self.walk(index + 1, rest, prefixOnly: prefixOnly)
        default:
            return false
        }
    }
}

/// Returns the first path in `json` that no pattern allows, or nil when every one is allowed.
func forbiddenPath(in json: [UInt8], allowing patterns: [Pattern]) -> [PathStep]? {
    var reader = JSONReader(bytes: json)
    return reader.value(at: [], patterns)
}

/// Just enough JSON to walk valid documents: the filter's output always is one.
struct JSONReader {
    let bytes: [UInt8]
    var index = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Reads one value at `path`; returns a forbidden path inside it, if any: a value where no
    /// pattern matches it or a path above it, and none leads below it either; or a scalar where no
    /// pattern matches it or a path above it.
    mutating func value(at path: [PathStep], _ patterns: [Pattern]) -> [PathStep]? {
        let allowed = patterns.contains { pattern in (0...path.count).contains { pattern.matches(path[..<$0]) } }
        let reachable = allowed || path.isEmpty || patterns.contains { $0.leadsBelow(path[...]) }
        var found: [PathStep]? = reachable ? nil : path
        self.skipSpace()
        switch self.bytes[self.index] {
        case UInt8(ascii: "{"):
            self.index += 1
            while self.next() != UInt8(ascii: "}") {
                if self.bytes[self.index] == UInt8(ascii: ",") { self.index += 1 }
                self.skipSpace()
                let key = self.string()
                self.skipSpace()
                self.index += 1  // :
                if let deeper = self.value(at: path + [.key(key)], patterns), found == nil, !allowed { found = deeper }
            }
            self.index += 1
        case UInt8(ascii: "["):
            self.index += 1
            while self.next() != UInt8(ascii: "]") {
                if self.bytes[self.index] == UInt8(ascii: ",") { self.index += 1 }
                if let deeper = self.value(at: path + [.element], patterns), found == nil, !allowed { found = deeper }
            }
            self.index += 1
        case UInt8(ascii: "\""):
            _ = self.string()
            if !allowed && found == nil { found = path }
        default:
            while self.index < self.bytes.count, !",}] \t\r\n".utf8.contains(self.bytes[self.index]) { self.index += 1 }
            if !allowed && found == nil { found = path }
        }
        return found
    }

    /// The next significant octet, not consumed.
    private mutating func next() -> UInt8 {
        self.skipSpace()
        return self.bytes[self.index]
    }

    private mutating func skipSpace() {
        while self.index < self.bytes.count, " \t\r\n".utf8.contains(self.bytes[self.index]) { self.index += 1 }
    }

    /// A string's octets, unescaped (`\uXXXX` as UTF-8, surrogate pairs joined).
    private mutating func string() -> [UInt8] {
        self.index += 1  // "
        var octets: [UInt8] = []
        while self.bytes[self.index] != UInt8(ascii: "\"") {
            guard self.bytes[self.index] == UInt8(ascii: "\\") else {
                octets.append(self.bytes[self.index])
                self.index += 1
                continue
            }
            let escape = self.bytes[self.index + 1]
            self.index += 2
            switch escape {
            case UInt8(ascii: "b"): octets.append(0x08)
            case UInt8(ascii: "f"): octets.append(0x0C)
            case UInt8(ascii: "n"): octets.append(0x0A)
            case UInt8(ascii: "r"): octets.append(0x0D)
            case UInt8(ascii: "t"): octets.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = self.hex4()
                if (0xD800..<0xDC00).contains(scalar), self.bytes[self.index] == UInt8(ascii: "\\") {
                    self.index += 2
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (self.hex4() - 0xDC00)
                }
                octets += Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
            default: octets.append(escape)
            }
        }
        self.index += 1
        return octets
    }

    private mutating func hex4() -> UInt32 {
        let text = String(decoding: self.bytes[self.index..<self.index + 4], as: UTF8.self)
        self.index += 4
        return UInt32(text, radix: 16) ?? 0xFFFD
    }
}
