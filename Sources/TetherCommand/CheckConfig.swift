import ArgumentParser
import TetherPolicy
import TetherRelay

/// `tether check-config FILE`: reads an edge or hub configuration as the daemon would and says
/// what is wrong, with the file, line, column and key; for an edge, also every forward and expose
/// the customer's policy does not allow; for a hub, also its revocation list.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check an edge or hub configuration file (and, for an edge, its policy).")

    @Argument(help: "The configuration file (YAML, with role: edge or role: hub).")
    var file: String

    func run() throws {
        let loaded: RelayConfigurationFile
        do {
            loaded = try RelayConfigurationFile.load(path: self.file)
        } catch {
            print(error.description)
            throw ExitCode.failure
        }
        switch loaded {
        case .edge(let edge):
            let policy: Policy
            do {
                policy = try PolicyFile.load(path: edge.policy)
            } catch {
                print("\(self.file): policy: \(error.description)")
                throw ExitCode.failure
            }
            let problems = edge.problems(against: policy)
            for problem in problems { print("\(self.file): \(problem)") }
            guard problems.isEmpty else { throw ExitCode.failure }
            print(
                "\(self.file): edge, \(edge.hubs.count) hub(s), \(edge.forwards.count) forward(s), "
                    + "\(edge.exposes.count) expose(s), \(edge.metadata.count) metadata listener(s), \(edge.logs.count) log source(s); "
                    + "every one allowed by \(edge.policy)")
        case .hub(let hub):
            if let revoked = hub.revoked {
                do {
                    _ = try RevocationList.load(path: revoked)
                } catch {
                    print(error.description)
                    throw ExitCode.failure
                }
            }
            print(
                "\(self.file): hub on \(hub.listen), \(hub.services.count) service(s), \(hub.listeners.count) listener(s)")
        }
    }
}
