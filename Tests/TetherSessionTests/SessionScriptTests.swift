import TetherTestSupport
import Testing

/// spec §13: every session script under spec/vectors/sessions/ runs against a real Session.
@Suite struct SessionScriptTests {
    static let scripts = try! SessionScript.all()

    @Test(arguments: Self.scripts.map { "\($0.file): \($0.name)" })
    func scriptRunsAsWritten(_ label: String) throws {
        let script = Self.scripts.first { "\($0.file): \($0.name)" == label }!
        let failures = try script.run()
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }
}
