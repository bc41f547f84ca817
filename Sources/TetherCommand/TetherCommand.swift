import ArgumentParser
import TetherBench

@main
struct TetherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tether",
        abstract: "Many logical channels over one outbound connection.",
        subcommands: [Demo.self, BenchCommand.self, Certs.self]
    )
}
