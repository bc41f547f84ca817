// libFuzzer target: the METADATA filter (spec/POLICY.md §5). See fuzz/README.md.
//
// The first input octet picks a pattern set; the rest is the message.
// Invariants: filtering never traps; whether a message is dropped does not depend on the
// patterns; with `**` a kept message comes back whole; what is kept is never longer than the
// message, passes the filter again unchanged with nothing removed (it is valid, and filtering
// is idempotent), and holds only paths the patterns allow — checked by an independent reader
// and matcher (AllowedPaths.swift) that shares nothing with the filter.
import TetherPolicy

private let patternSets: [[String]] = [
    ["**"], [], ["name"], ["node.name", "node.labels.*", "pods[].name", "pods[].containers[].image"],
    ["*"], ["**.name"], ["a[][]", "b.**"], ["*.*[]", "x"],
]
private let filters = patternSets.map { set in JSONFilter(allowing: set.map { try! FieldPattern($0) }, maxBytes: 4_096) }
private let references = patternSets.map { set in set.map(Pattern.init) }
private let everything = JSONFilter(allowing: [try! FieldPattern("**")], maxBytes: 4_096)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicyFilter(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let set = Int(input[0]) % filters.count
    let filter = filters[set]
    let message = Array(input.dropFirst())

    let filtered = Result { () throws(DropReason) in try filter.filter(message) }
    let whole = Result { () throws(DropReason) in try everything.filter(message) }
    switch (filtered, whole) {
    case (.success(let (output, _)), .success(let (all, removed))):
        precondition(removed.count == 0, "`**` removed something")
        precondition(all == Array(trimmed(message)), "`**` changed a kept message")
        precondition(output.count <= message.count, "the output grew")
        let again = Result { () throws(DropReason) in try filter.filter(output) }
        guard case .success(let (second, removedAgain)) = again else { preconditionFailure("the output is not valid") }
        precondition(second == output && removedAgain.count == 0, "filtering is not idempotent")
        if let path = forbiddenPath(in: output, allowing: references[set]) {
            preconditionFailure("the output holds \(path), which \(patternSets[set]) does not allow")
        }
    case (.failure(let first), .failure(let second)):
        precondition(first == second, "the patterns changed why a message was dropped")
    default:
        preconditionFailure("the patterns changed whether a message was dropped")
    }
    return 0
}

/// The message without the whitespace around it.
private func trimmed(_ message: [UInt8]) -> ArraySlice<UInt8> {
    let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
    var slice = message[...]
    while let first = slice.first, space.contains(first) { slice = slice.dropFirst() }
    while let last = slice.last, space.contains(last) { slice = slice.dropLast() }
    return slice
}
