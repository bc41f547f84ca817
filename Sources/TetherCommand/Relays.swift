import ArgumentParser
import Logging
import ServiceLifecycle
import TetherRelay
import UnixSignals

/// `tether edge --config FILE` and `tether hub --config FILE`: one relay until SIGTERM or SIGINT,
/// which drain it (no new connections, GOAWAY, open streams finish within the grace period).
/// SIGHUP reloads what can change under a running relay: the hub's TLS files and revocation list,
/// the edge's policy (its TLS files are read again on every dial).
struct RelayCommand {
    static func run(config: String, expecting role: String) async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = Logger(label: "tether.\(role)")
        let service: any Service
        let reload: @Sendable () -> Void
        do {
            switch try RelayConfigurationFile.load(path: config) {
            case .edge(let edge) where role == "edge":
                let relay = try EdgeRelay(configuration: edge, logger: logger)
                (service, reload) = (relay, { relay.reload() })
            case .hub(let hub) where role == "hub":
                let relay = try HubRelay(configuration: hub, logger: logger)
                (service, reload) = (relay, { relay.reload() })
            default: throw RelayError("\(config) is not an \(role) configuration (role: \(role))")
            }
        } catch let error as ConfigError {
            print(error.description)
            throw ExitCode.failure
        } catch {
            print("\(config): \(error)")
            throw ExitCode.failure
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                for await _ in hangups { reload() }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}

struct Edge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the edge relay: one TLS connection to the hub, local forwards and exposed targets.")

    @Option(help: "The edge's configuration file (README: Configuration).")
    var config: String = "/etc/tether/edge.yaml"

    func run() async throws { try await RelayCommand.run(config: self.config, expecting: "edge") }
}

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the hub relay: accept edges, splice their streams to backends, open agents' targets.")

    @Option(help: "The hub's configuration file (README: Configuration).")
    var config: String = "/etc/tether/hub.yaml"

    func run() async throws { try await RelayCommand.run(config: self.config, expecting: "hub") }
}
