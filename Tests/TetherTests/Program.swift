import Foundation

/// A real program run to its end (curl, python3): its exit status and what it printed, stdout
/// and stderr apart. Output goes to files, so a chatty program never blocks on a full pipe, and
/// the wait polls, so no thread of the shared pool is held.
struct Program {
    var status: Int32
    var output: String
    var errors: String

    static func run(_ arguments: [String], input: String? = nil) async throws -> Program {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("program-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let stdout = directory.appendingPathComponent("out")
        let stderr = directory.appendingPathComponent("err")
        FileManager.default.createFile(atPath: stdout.path, contents: nil)
        FileManager.default.createFile(atPath: stderr.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        if let input {
            let file = directory.appendingPathComponent("in")
            try input.write(to: file, atomically: true, encoding: .utf8)
            process.standardInput = try FileHandle(forReadingFrom: file)
        }
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        return Program(
            status: process.terminationStatus, output: try String(contentsOf: stdout, encoding: .utf8),
            errors: try String(contentsOf: stderr, encoding: .utf8))
    }
}
