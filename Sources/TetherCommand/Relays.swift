import ArgumentParser
import Logging
import Metrics
import Prometheus
import NIOPosix
import ServiceLifecycle
import TetherRelay
import UnixSignals

/// `tether edge --config FILE` and `tether hub --config FILE`: one relay until SIGTERM or SIGINT,
/// which drain it (no new connections, GOAWAY, open streams finish within the grace period).
/// SIGHUP reads the configuration file again and puts in force what can change under a running
/// relay (``EdgeRelay/reload(_:)``, ``HubRelay/reload(_:)``); a file that does not parse, or a
/// change that cannot be made, leaves the running configuration as it was.
struct RelayCommand {
    static func run(config: String, expecting role: String) async throws {
        let file: RelayConfigurationFile
        let audit: LogSink
        let access: LogSink
        do {
            file = try RelayConfigurationFile.load(path: config)
            audit = try file.logging.auditFile.map { (path) throws(RelayError) in try LogSink(appendingTo: path) } ?? .standardOutput
            access = try file.logging.accessFile.map { (path) throws(RelayError) in try LogSink(appendingTo: path) } ?? .standardOutput
        } catch let error as ConfigError {
            print(error.description)
            throw ExitCode.failure
        } catch {
            print("\(config): audit.file or access.file: \(error)")
            throw ExitCode.failure
        }
        Self.bootstrapLogging(file.logging, audit: audit, access: access)
        // Every metric the process records, for the admin listener's /metrics.
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
        let logger = Logger(label: "tether.\(role)")
        let service: any Service
        let reload: @Sendable (RelayConfigurationFile) async throws -> Void
        let listening: @Sendable () async throws -> Void
        var admin: AdminServer?
        func adminServer(
            _ configuration: AdminConfiguration?, source: any AdminSource, agents: (any AgentDirectory)? = nil
        ) -> AdminServer? {
            configuration.map {
                AdminServer(
                    configuration: $0, source: source, agents: agents, metrics: { metrics.emitToBuffer() },
                    group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "tether.\(role).admin"))
            }
        }
        do {
            switch file {
            case .edge(let edge) where role == "edge":
                let relay = try EdgeRelay(configuration: edge, logger: logger)
                admin = adminServer(edge.admin, source: relay)
                reload = { [admin] file in
                    guard case .edge(let new) = file else {
                        return logger.error("configuration not reloaded: \(config) is no longer an edge configuration")
                    }
                    try await relay.reload(new)
                    Self.reload(admin, to: new.admin, logger: logger)
                }
                (service, listening) = (relay, { try await relay.listening })
            case .hub(let hub) where role == "hub":
                let relay = try HubRelay(configuration: hub, logger: logger)
                admin = adminServer(hub.admin, source: relay, agents: relay)
                reload = { [admin] file in
                    guard case .hub(let new) = file else {
                        return logger.error("configuration not reloaded: \(config) is no longer a hub configuration")
                    }
                    try await relay.reload(new)
                    Self.reload(admin, to: new.admin, logger: logger)
                }
                (service, listening) = (relay, { try await relay.listening })
            default: throw RelayError("\(config) is not an \(role) configuration (role: \(role))")
            }
        } catch let error as ConfigError {
            print(error.description)
            throw ExitCode.failure
        } catch {
            print("\(config): \(error)")
            throw ExitCode.failure
        }
        // Under systemd (`Type=notify`, README "systemd"): READY once listening, RELOADING and
        // READY around a SIGHUP, STOPPING on SIGTERM, and the watchdog's pings.
        let notifier = SystemdNotifier()
        // The admin listener first: a group stops its services last to first, so it answers
        // (`/readyz`: draining) until the relay has drained.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let admin { services.append(.init(service: admin)) }
        services.append(.init(service: service))
        services.append(.init(service: MemoryReturn(), successTerminationBehavior: .ignore))
        if let notifier {
            services.append(
                .init(service: SystemdLifecycle(notifier: notifier, listening: listening), successTerminationBehavior: .ignore))
            if let interval = SystemdWatchdog.interval() {
                services.append(.init(service: SystemdWatchdog(notifier: notifier, interval: interval, group: MultiThreadedEventLoopGroup.singleton)))
            }
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                for await _ in hangups {
                    try? notifier?.notifyReloading()
                    // After logrotate moved the audit file away, records go to a new one.
                    for (name, sink) in [("audit", audit), ("access", access)] {
                        do {
                            try sink.reopen()
                        } catch {
                            logger.error("\(name) file not reopened; records still go to the old one", metadata: ["error": "\(error)"])
                        }
                    }
                    // A file that does not parse changes nothing; the relay logs its own refusals.
                    do {
                        let new = try RelayConfigurationFile.load(path: config)
                        try await reload(new)
                        if new.logging != file.logging { logger.warning("changed, in force after a restart: log, audit, access") }
                    } catch let error as ConfigError {
                        logger.error("configuration not reloaded; the running one stays in force", metadata: ["error": "\(error.description)"])
                    } catch {}
                    try? notifier?.notify("READY=1")
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}

extension RelayCommand {
    /// The operational log on standard error (JSON lines or text), audit records as JSON lines
    /// on their own sink (README "Logs and audit").
    static func bootstrapLogging(_ logging: LoggingConfiguration, audit: LogSink, access: LogSink) {
        LoggingSystem.bootstrap { label in
            if label == "tether.audit" { return JSONLogHandler(label: label, sink: audit, level: .info) }
            if label == "tether.access" { return JSONLogHandler(label: label, sink: access, level: .info) }
            switch logging.format {
            case .json:
                return JSONLogHandler(label: label, sink: .standardError, level: logging.level)
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = logging.level
                return handler
            }
        }
    }

    /// The admin listener's part of a reload: its operator tokens.
    static func reload(_ admin: AdminServer?, to configuration: AdminConfiguration?, logger: Logger) {
        switch (admin, configuration) {
        case (let admin?, let configuration?): admin.reload(configuration)
        case (nil, nil): break
        default: logger.warning("changed, in force after a restart: admin")
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

/// `READY=1` once the relay listens, `STOPPING=1` when it starts to drain.
struct SystemdLifecycle: Service {
    let notifier: SystemdNotifier
    let listening: @Sendable () async throws -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown { try await self.listening() }
        try self.notifier.notify("READY=1\nSTATUS=listening")
        try? await gracefulShutdown()
        try self.notifier.notify("STOPPING=1")
    }
}
