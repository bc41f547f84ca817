import ArgumentParser
import Foundation
import NIOCore
import Tether
import TetherTLS

/// What one process has spent so far: CPU, system calls, context switches, TLS records, copies.
/// `tether bench` reads it in both processes before and after a row and prints the difference per
/// MiB moved — figures that a shared, noisy machine disturbs far less than MiB/s.
struct ProcessCost: Sendable {
    var cpuNanoseconds = 0
    /// read(2)/readv(2) and write(2)/writev(2) calls (`syscr`, `syscw` in /proc/self/io): how
    /// NIO moves socket data, and how its event loops wake each other (eventfd).
    var readCalls = 0
    var writeCalls = 0
    var contextSwitches = 0
    var tls = TLSStatistics()
    var dataPath = DataPathStatistics()

    /// This process, now.
    static func current() -> ProcessCost {
        var cost = ProcessCost()
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        cost.cpuNanoseconds =
            (Int(usage.ru_utime.tv_sec) + Int(usage.ru_stime.tv_sec)) * 1_000_000_000
            + (Int(usage.ru_utime.tv_usec) + Int(usage.ru_stime.tv_usec)) * 1_000
        cost.contextSwitches = Int(usage.ru_nvcsw) + Int(usage.ru_nivcsw)
        if let io = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) {
            for line in io.split(separator: "\n") {
                let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let value = Int(parts[1]) else { continue }
                if parts[0] == "syscr" { cost.readCalls = value }
                if parts[0] == "syscw" { cost.writeCalls = value }
            }
        }
        cost.tls = TLSStatistics.process
        cost.dataPath = DataPathStatistics.process
        return cost
    }

    private var fields: [Int] {
        [
            self.cpuNanoseconds, self.readCalls, self.writeCalls, self.contextSwitches, self.tls.recordsWritten,
            self.tls.plaintextOctetsWritten, self.tls.recordsRead, self.tls.plaintextOctetsRead, self.tls.octetsCopied,
            self.dataPath.dataOctetsWritten, self.dataPath.dataOctetsCopied,
        ]
    }

    private init(fields: [Int]) {
        self.cpuNanoseconds = fields[0]
        self.readCalls = fields[1]
        self.writeCalls = fields[2]
        self.contextSwitches = fields[3]
        self.tls.recordsWritten = fields[4]
        self.tls.plaintextOctetsWritten = fields[5]
        self.tls.recordsRead = fields[6]
        self.tls.plaintextOctetsRead = fields[7]
        self.tls.octetsCopied = fields[8]
        self.dataPath.dataOctetsWritten = fields[9]
        self.dataPath.dataOctetsCopied = fields[10]
    }

    private init() {}

    /// The far end's answer to the `cost` service.
    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        for field in self.fields { buffer.writeInteger(UInt64(truncatingIfNeeded: field)) }
        return buffer
    }

    init?(decoding buffer: inout ByteBuffer) {
        var fields: [Int] = []
        while let field = buffer.readInteger(as: UInt64.self) { fields.append(Int(truncatingIfNeeded: field)) }
        guard fields.count == ProcessCost().fields.count else { return nil }
        self.init(fields: fields)
    }

    static func + (lhs: ProcessCost, rhs: ProcessCost) -> ProcessCost {
        ProcessCost(fields: zip(lhs.fields, rhs.fields).map { $0 + $1 })
    }

    static func - (lhs: ProcessCost, rhs: ProcessCost) -> ProcessCost {
        ProcessCost(fields: zip(lhs.fields, rhs.fields).map { $0 - $1 })
    }
}

/// Both processes' cost: this one, and the bench server's (asked over the tunnel).
struct CostMeter {
    let connection: TetherConnection

    func total() async throws -> ProcessCost {
        let handle = try await self.connection.openStream(service: "cost", class: .command).handle
        let answer = try await handle.eventLoop.flatSubmit { Workloads.readMessage(handle) }.get()
        guard var answer, let far = ProcessCost(decoding: &answer) else {
            throw ValidationError("the far end (tether bench serve) did not report its cost")
        }
        return far + ProcessCost.current()
    }
}

extension BenchThroughput.Row {
    /// The row's cost per MiB moved, both processes together.
    mutating func charge(_ spent: ProcessCost, octets: Int) {
        let mib = Double(octets) / 1_048_576
        self.cpu_ns_per_byte = Double(spent.cpuNanoseconds) / Double(octets)
        self.syscalls_per_mib = Double(spent.readCalls + spent.writeCalls) / mib
        self.context_switches_per_mib = Double(spent.contextSwitches) / mib
        if spent.tls.recordsWritten > 0 {
            self.tls_records_per_mib = Double(spent.tls.recordsWritten) / mib
            self.tls_record_mean_octets = Double(spent.tls.plaintextOctetsWritten) / Double(spent.tls.recordsWritten)
        }
        self.copies_per_octet = Double(spent.tls.octetsCopied + spent.dataPath.dataOctetsCopied) / Double(octets)
    }

    /// `1.62 CPU ns/B  48 syscalls/MiB  12 cs/MiB  64.0 records/MiB of 16384 B  3.00 copies/B`
    var costSummary: String? {
        guard let cpu = self.cpu_ns_per_byte else { return nil }
        var line = String(format: "%.2f CPU ns/B", cpu)
        if let calls = self.syscalls_per_mib, let switches = self.context_switches_per_mib {
            line += String(format: "  %.0f syscalls/MiB  %.0f cs/MiB", calls, switches)
        }
        if let records = self.tls_records_per_mib, let mean = self.tls_record_mean_octets {
            line += String(format: "  %.1f records/MiB of %.0f B", records, mean)
        }
        if let copies = self.copies_per_octet { line += String(format: "  %.2f copies/B", copies) }
        return line
    }
}
