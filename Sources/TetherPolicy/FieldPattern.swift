/// One allowlisted path of a METADATA document (spec/POLICY.md §4): keys separated by `.`, where a
/// segment is a key, `*` (any one key of an object) or `**` (any path, zero or more steps, through
/// objects and arrays), and `[]` after a segment steps into every element of an array.
///
/// A pattern that matches a path allows the whole value there: `node.labels` keeps every label.
public struct FieldPattern: Hashable, Sendable, CustomStringConvertible {
    enum Step: Hashable, Sendable {
        case key([UInt8])
        case anyKey
        case anyDepth
        case element
    }

    let steps: [Step]
    public let description: String

    public init(_ text: String) throws(PolicyError) {
        guard !text.isEmpty else { throw PolicyError("an empty field pattern") }
        var steps: [Step] = []
        for segment in text.split(separator: ".", omittingEmptySubsequences: false) {
            var base = Substring(segment)
            var elements = 0
            while base.hasSuffix("[]") {
                base = base.dropLast(2)
                elements += 1
            }
            switch base {
            case "":
                throw PolicyError("field pattern \"\(text)\": an empty segment (a key is needed before `[]` and between dots)")
            case "*":
                steps.append(.anyKey)
            case "**":
                guard elements == 0 else { throw PolicyError("field pattern \"\(text)\": `**[]` says nothing `**` does not") }
                steps.append(.anyDepth)
            default:
                guard !base.contains(where: { "*[]".contains($0) }) else {
                    throw PolicyError("field pattern \"\(text)\": `\(base)` mixes a key with `*`, `[` or `]`")
                }
                steps.append(.key(Array(base.utf8)))
            }
            steps += repeatElement(.element, count: elements)
        }
        guard steps.count <= 64 else { throw PolicyError("field pattern \"\(text)\": more than 64 steps") }
        self.steps = steps
        self.description = text
    }
}

/// What a set of patterns says about the value at a path.
public enum FieldMatch: Sendable, Equatable {
    /// A pattern matches the path: the value passes whole.
    case all
    /// No pattern can match the path or anything below it: the value is removed.
    case none
    /// Patterns may match below: an object or array is kept with what passes inside it; anything
    /// else is removed.
    case partial
}

/// The patterns of one rule as a nondeterministic automaton over path steps. States are
/// `pattern << 16 | position`, kept by the caller on a stack so matching allocates nothing per
/// document once the stack has grown.
public struct FieldMatcher: Sendable {
    let patterns: [[FieldPattern.Step]]

    /// At most 65,535 patterns (a policy allows far fewer per rule).
    public init(_ patterns: [FieldPattern]) {
        precondition(patterns.count < 1 << 16, "too many field patterns in one rule")
        self.patterns = patterns.map(\.steps)
    }

    /// Pushes the root states onto `stack`.
    func start(_ stack: inout [UInt32]) -> FieldMatch {
        let base = stack.count
        var accepts = false
        for pattern in self.patterns.indices { accepts = self.add(pattern, 0, to: &stack, from: base) || accepts }
        return accepts ? .all : (stack.count == base ? .none : .partial)
    }

    /// Pushes the states reached from `states` through an object key (unescaped octets).
    func key(_ key: UnsafeBufferPointer<UInt8>, from states: Range<Int>, _ stack: inout [UInt32]) -> FieldMatch {
        self.step(key, from: states, &stack)
    }

    /// Pushes the states reached from `states` into an array element.
    func element(from states: Range<Int>, _ stack: inout [UInt32]) -> FieldMatch {
        self.step(nil, from: states, &stack)
    }

    /// One step down the document: into the member `key`, or into an element when it is nil.
    private func step(_ key: UnsafeBufferPointer<UInt8>?, from states: Range<Int>, _ stack: inout [UInt32]) -> FieldMatch {
        let base = stack.count
        var accepts = false
        for index in states {
            let state = stack[index]
            let (pattern, position) = (Int(state >> 16), Int(state & 0xFFFF))
            let next: Int
            switch (self.patterns[pattern][position], key) {
            case (.key(let name), let key?) where name.elementsEqual(key): next = position + 1
            case (.anyKey, _?), (.element, nil): next = position + 1
            case (.anyDepth, _): next = position
            default: continue
            }
            accepts = self.add(pattern, next, to: &stack, from: base) || accepts
        }
        return accepts ? .all : (stack.count == base ? .none : .partial)
    }

    /// Adds a state and, through `**` (which may match nothing), the states after it. Returns
    /// whether one of them has matched the whole pattern.
    private func add(_ pattern: Int, _ position: Int, to stack: inout [UInt32], from base: Int) -> Bool {
        let steps = self.patterns[pattern]
        if position == steps.count { return true }
        let state = UInt32(pattern) << 16 | UInt32(position)
        if stack[base...].contains(state) { return false }
        stack.append(state)
        if steps[position] == .anyDepth { return self.add(pattern, position + 1, to: &stack, from: base) }
        return false
    }
}

/// A policy that cannot be used, with what is wrong and where.
public struct PolicyError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
