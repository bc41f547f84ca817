import ArgumentParser

@main
struct TetherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tether",
        abstract: "Many logical channels over one outbound connection.",
        subcommands: [Demo.self, Bench.self, BenchCompression.self, BenchPolicy.self, Certs.self, BenchServer.self, BenchScheduler.self, Target.self]
    )
}
