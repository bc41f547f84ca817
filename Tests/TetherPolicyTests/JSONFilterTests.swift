import Testing

@testable import TetherPolicy

/// spec/POLICY.md §4–§5: what passes the METADATA filter, and what drops a message whole.
@Suite struct JSONFilterTests {
    static func run(_ patterns: [String], _ document: String, maxBytes: Int = 1 << 20) throws -> (String, RemovedFields) {
        let filter = JSONFilter(allowing: try patterns.map(FieldPattern.init), maxBytes: maxBytes)
        let (output, removed) = try filter.filter(Array(document.utf8))
        return (String(decoding: output, as: UTF8.self), removed)
    }

    static func dropReason(_ patterns: [String], _ document: String, maxBytes: Int = 1 << 20) throws -> DropReason? {
        let filter = JSONFilter(allowing: try patterns.map(FieldPattern.init), maxBytes: maxBytes)
        do {
            _ = try filter.filter(Array(document.utf8))
            return nil
        } catch {
            return error
        }
    }

    struct Example: Sendable, CustomTestStringConvertible {
        var patterns: [String]
        var input: String
        var output: String
        var removed: [String]
        var testDescription: String { self.patterns.joined(separator: " ") }
    }

    static let examples: [Example] = [
        Example(
            patterns: ["node.name"], input: #"{"node": {"name": "n1", "token": "s3cr3t"}, "other": 1}"#,
            output: #"{"node":{"name":"n1"}}"#, removed: ["node.token", "other"]),
        Example(
            patterns: ["node.labels.*"], input: #"{"node": {"labels": {"app": "web", "tier": {"a": 1}}, "ip": "10.0.0.1"}}"#,
            output: #"{"node":{"labels":{"app":"web","tier":{"a": 1}}}}"#, removed: ["node.ip"]),
        Example(
            patterns: ["node.labels.*"], input: #"{"node": {"labels": "flat"}}"#,
            output: #"{"node":{}}"#, removed: ["node.labels"]),
        Example(
            patterns: ["status.**"], input: #"{"status": {"phase": "Running", "c": [1, {"x": null}]}, "spec": {}}"#,
            output: #"{"status":{"phase": "Running", "c": [1, {"x": null}]}}"#, removed: ["spec"]),
        Example(
            patterns: ["**.name"], input: #"{"a": {"name": 1, "x": 2}, "b": [{"name": 3}, [{"name": 5}], 7], "name": 4}"#,
            output: #"{"a":{"name":1},"b":[{"name":3},[{"name":5}]],"name":4}"#, removed: ["a.x", "b[]"]),
        Example(
            patterns: ["pods[].name", "pods[].containers[].image"],
            input: #"{"pods": [{"name": "web", "env": ["A=1"], "containers": [{"image": "nginx", "args": ["-x"]}]}, "stray"]}"#,
            output: #"{"pods":[{"name":"web","containers":[{"image":"nginx"}]}]}"#,
            removed: ["pods[].env", "pods[].containers[].args", "pods[]"]),
        Example(
            patterns: ["matrix[][]"], input: #"{"matrix": [[1, 2], [3], 4]}"#,
            output: #"{"matrix":[[1,2],[3]]}"#, removed: ["matrix[]"]),
        Example(
            patterns: ["name"], input: #"{"na\u006de": "kept, matched after unescaping", "n\"ame": 1}"#,
            output: #"{"na\u006de":"kept, matched after unescaping"}"#, removed: [#"n"ame"#]),
        Example(patterns: [], input: #"{"anything": [1, 2, 3]}"#, output: "{}", removed: ["anything"]),
        Example(patterns: ["**"], input: " { \"a\" : [ 1 ] } \n", output: #"{ "a" : [ 1 ] }"#, removed: []),
        Example(patterns: ["*"], input: #"{"a": {"b": 1}, "c": "d"}"#, output: #"{"a":{"b": 1},"c":"d"}"#, removed: []),
        Example(patterns: ["a.*.c"], input: #"{"a": {"x": {"c": 1, "d": 2}, "y": [{"c": 3}]}}"#,
            output: #"{"a":{"x":{"c":1},"y":[]}}"#, removed: ["a.x.d", "a.y[]"]),
    ]

    @Test(arguments: Self.examples)
    func keepsOnlyWhatThePatternsAllow(_ example: Example) throws {
        let (output, removed) = try Self.run(example.patterns, example.input)
        #expect(output == example.output)
        #expect(removed.paths == example.removed)
        #expect(removed.count >= example.removed.count)
    }

    @Test func countsEveryRemovalAndNamesAtMostSixteenPaths() throws {
        let members = (0..<40).map { "\"k\($0)\": \($0)" }.joined(separator: ", ")
        let (output, removed) = try Self.run(["keep"], "{\"keep\": true, \(members)}")
        #expect(output == #"{"keep":true}"#)
        #expect(removed.count == 40)
        #expect(removed.paths.count == JSONFilter.namedPaths)
        let repeated = try Self.run(["a[].b"], #"{"a": [{"b": 1, "c": 2}, {"c": 3}, {"c": 4}]}"#).1
        #expect(repeated.count == 3)
        #expect(repeated.paths == ["a[].c"])
    }

    @Test(arguments: [
        "", "   ", "{", "}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, #"{"a":1 "b":2}"#, "{'a':1}", #"{"a":NaN}"#,
        #"{"a":Infinity}"#, #"{"a":01}"#, #"{"a":-}"#, #"{"a":1.}"#, #"{"a":1e}"#, #"{"a":.5}"#, #"{"a":+1}"#,
        #"{"a":tru}"#, #"{"a":nul}"#, #"{"a":"unterminated}"#, #"{"a":"bad \x escape"}"#, #"{"a":"\u12"}"#,
        "{\"a\":\"tab\tinside\"}", #"{"a":"\ud800"}"#, #"{"a":"\udc00"}"#, #"{"a":"\ud800\u0041"}"#, #"{"a":1} {"#,
        #"{"a":1} x"#, "\u{FEFF}{}", #"{"a":[1,]}"#, #"{"a":[,1]}"#, #"{"a" 1}"#, #"{1:1}"#,
    ])
    func invalidJSONIsDroppedWhole(_ document: String) throws {
        let reason = try Self.dropReason(["**"], document)
        #expect(reason?.name == "invalid-json", "\(String(describing: reason))")
    }

    @Test(arguments: [
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC0, 0x80, 0x22, 0x7D],  // overlong NUL
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x7D],  // an encoded surrogate
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xF4, 0x90, 0x80, 0x80, 0x22, 0x7D],  // past U+10FFFF
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xE2, 0x82, 0x22, 0x7D],  // cut short
        [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D],  // not UTF-8 at all, in a key
    ] as [[UInt8]])
    func invalidUTF8IsDroppedWhole(_ document: [UInt8]) throws {
        let filter = JSONFilter(allowing: [try FieldPattern("**")])
        #expect(throws: DropReason.self) { try filter.filter(document) }
        let valid = try filter.filter(Array(#"{"a":"é € 𝄞"}"#.utf8)).output
        #expect(String(decoding: valid, as: UTF8.self) == #"{"a":"é € 𝄞"}"#)
    }

    @Test func duplicateKeysDropTheMessageWhereverTheyAre() throws {
        #expect(try Self.dropReason(["a"], #"{"a": 1, "a": 2}"#) == .duplicateKey("a"))
        #expect(try Self.dropReason(["a"], #"{"a": 1, "\u0061": 2}"#) == .duplicateKey("a"), "after unescaping")
        // Inside a removed subtree, and in an object large enough to be sorted.
        let many = (0..<50).map { "\"k\($0)\": 0" }.joined(separator: ", ")
        #expect(try Self.dropReason(["a"], "{\"a\": 1, \"b\": {\(many), \"k17\": 1}}") == .duplicateKey("k17"))
        #expect(try Self.dropReason(["a"], "{\"a\": 1, \"b\": {\(many)}}") == nil)
        // The same key in sibling objects is fine.
        #expect(try Self.dropReason(["**"], #"{"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 2}]}"#) == nil)
    }

    @Test func keysWithDotsDropTheMessage() throws {
        #expect(try Self.dropReason(["**"], #"{"a.b": 1}"#) == .keyContainsDot("a.b"))
        #expect(try Self.dropReason(["x"], #"{"x": 1, "y": {"a\u002eb": 1}}"#) == .keyContainsDot("a.b"))
        #expect(try Self.dropReason(["**"], #"{"a": "dots in values are fine..."}"#) == nil)
    }

    @Test func depthIsLimitedToThirtyTwo() throws {
        func nested(_ depth: Int) -> String {
            String(repeating: "{\"a\":", count: depth - 1) + "{}" + String(repeating: "}", count: depth - 1)
        }
        #expect(try Self.dropReason(["**"], nested(32)) == nil)
        #expect(try Self.dropReason(["**"], nested(33)) == .tooDeep(limit: 32))
        #expect(try Self.dropReason([], nested(33)) == .tooDeep(limit: 32), "removed subtrees are checked too")
        let arrays = "{\"a\":" + String(repeating: "[", count: 32) + String(repeating: "]", count: 32) + "}"
        #expect(try Self.dropReason(["**"], arrays) == .tooDeep(limit: 32))
    }

    @Test func sizeAndShapeLimits() throws {
        #expect(try Self.dropReason(["**"], #"{"a": "0123456789"}"#, maxBytes: 10) == .tooLarge(limit: 10))
        #expect(try Self.dropReason(["**"], #"[{"a": 1}]"#) == .notAnObject)
        #expect(try Self.dropReason(["**"], #""text""#) == .notAnObject)
        #expect(try Self.dropReason(["**"], "42") == .notAnObject)
    }

    @Test func aDroppedMessageLeavesTheOutputAsItWas() throws {
        let filter = JSONFilter(allowing: [try FieldPattern("a")])
        var output = Array("kept".utf8)
        #expect(throws: DropReason.self) {
            try Array(#"{"a": 1, "b": [1, 2, "#.utf8).withUnsafeBytes { _ = try filter.filter($0, into: &output) }
        }
        #expect(output == Array("kept".utf8))
    }

    @Test(arguments: ["", "a..b", ".a", "a.", "a[", "a]", "a*", "**[]", "[]", "a.[]", "x*y"])
    func badPatternsAreErrors(_ text: String) {
        #expect(throws: PolicyError.self) { try FieldPattern(text) }
    }
}
