import Foundation
import Testing

@testable import TetherPolicy

/// spec/POLICY.md §5 against an independent implementation on Python's `json` module
/// (spec/policy/reference.py): the same verdict and the same output for every document of a
/// generated corpus — valid, damaged and hostile ones.
@Suite struct DifferentialTests {
    static let reference = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("spec/policy/reference.py")

    struct Case: Decodable {
        var patterns: [String]
        var limit: Int
        var doc: String
    }

    struct Answer: Encodable {
        var dropped: String?
        var output: String?
        var removed: Int
    }

    @discardableResult
    static func python(_ arguments: [String], stdout: URL) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.reference.path] + arguments
        guard FileManager.default.createFile(atPath: stdout.path, contents: nil) else { return -1 }
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = process.standardOutput
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    @Test(arguments: [1, 2])
    func theFilterAgreesWithPythonsJSONModule(seed: Int) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tether-diff-\(getpid())-\(seed)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let corpus = directory.appendingPathComponent("corpus.jsonl")
        let results = directory.appendingPathComponent("results.jsonl")
        let report = directory.appendingPathComponent("report.txt")
        #expect(try Self.python(["generate", "--seed", "\(seed)", "--count", "10000"], stdout: corpus) == 0)

        var answers = Data()
        let encoder = JSONEncoder()
        var count = 0
        for line in try String(contentsOf: corpus, encoding: .utf8).split(separator: "\n") {
            let item = try JSONDecoder().decode(Case.self, from: Data(line.utf8))
            let filter = JSONFilter(allowing: try item.patterns.map(FieldPattern.init), maxBytes: item.limit)
            let answer: Answer
            do {
                let (output, removed) = try filter.filter(Array(Data(base64Encoded: item.doc)!))
                answer = Answer(dropped: nil, output: Data(output).base64EncodedString(), removed: removed.count)
            } catch {
                answer = Answer(dropped: error.name, output: nil, removed: 0)
            }
            answers.append(try encoder.encode(answer))
            answers.append(UInt8(ascii: "\n"))
            count += 1
        }
        #expect(count == 10_000)
        try answers.write(to: results)
        let status = try Self.python(["check", corpus.path, results.path], stdout: report)
        let text = try String(contentsOf: report, encoding: .utf8)
        #expect(status == 0, "\(text)")
        #expect(text.contains(" 0 differences"), "\(text)")
        print(text)
    }
}
