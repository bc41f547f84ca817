import Foundation
import TetherWire

/// The hub's status page (`GET /` on its admin listener, README "Status page"): every connected
/// agent with its streams, traffic and last error, as one HTML document the hub renders itself.
/// No script, no external style or font: it refreshes itself with `<meta http-equiv="refresh">`,
/// so it works behind the strictest Content-Security-Policy and in any browser.
enum StatusPage {
    /// Seconds between refreshes; the hub samples throughput every 5 s.
    static let refreshSeconds = 5

    static func render(_ agents: [AgentStatus], instance: String, now: Date) -> String {
        let streams = agents.reduce(0) { $0 + $1.streams.values.reduce(0) { $0 + $1.open } }
        let tenants = Set(agents.map(\.tenant)).count
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Tether hub \(escape(instance)) — \(count(agents.count, "agent"))</title>
            <style>\(style)</style></head><body>
            <header><h1>Tether hub <code>\(escape(instance))</code></h1>
            <p>release \(escape(TetherRelease.version)) · \(count(agents.count, "agent")) of \(count(tenants, "tenant")) · \(count(streams, "open stream")) ·
            \(escape(Self.time(now))) · refreshes every \(refreshSeconds) s</p></header>

            """
        guard !agents.isEmpty else {
            return html + "<p class=\"empty\">No agent is connected.</p></body></html>\n"
        }
        html += """
            <table><thead><tr><th>Tenant</th><th>Agent</th><th>Address</th><th>Connected</th><th>Edge</th>
            <th>Open streams<br><small>command · metadata · logs · bulk</small></th><th>From agent</th><th>To agent</th>
            <th>Certificate until</th><th>Last error</th></tr></thead><tbody>

            """
        for agent in agents {
            let open = ["command", "metadata", "logs", "bulk"].map { "\(agent.streams[$0]?.open ?? 0)" }.joined(separator: " · ")
            let edge = (agent.edgeVersion ?? "?") + (agent.protocolVersion.map { " / v\($0)" } ?? "")
            html += """
                <tr class="agent"><td>\(escape(agent.tenant))</td><td class="id">\(escape(agent.agent))</td>\
                <td>\(escape(agent.address ?? "—"))</td>\
                <td title="\(escape(Self.time(agent.connectedSince)))">\(escape(Self.duration(now.timeIntervalSince(agent.connectedSince)))) ago</td>\
                <td>\(escape(edge))</td><td class="num">\(open)</td>\
                <td class="num">\(Self.traffic(agent.octetsFromAgent, agent.throughputFromAgent))</td>\
                <td class="num">\(Self.traffic(agent.octetsToAgent, agent.throughputToAgent))</td>\
                <td title="\(escape(agent.certificateNotAfter.map(Self.time) ?? ""))">\(escape(agent.certificateNotAfter.map(Self.day) ?? "—"))</td>\
                <td class="error">\(agent.lastError.map { "\(escape(Self.time($0.at))): \(escape($0.error))" } ?? "—")</td></tr>

                """
        }
        return html + "</tbody></table></body></html>\n"
    }

    /// `1 agent`, `2 agents`.
    static func count(_ number: Int, _ noun: String) -> String {
        "\(number) \(noun)\(number == 1 ? "" : "s")"
    }

    /// Octets so far and, when sampled, the rate: `12.4 MiB · 1.2 MiB/s`.
    static func traffic(_ octets: Int, _ perSecond: Double?) -> String {
        let total = Self.size(Double(octets))
        guard let perSecond else { return total }
        return "\(total) · \(Self.size(perSecond))/s"
    }

    static func size(_ octets: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = octets
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(Int(value)) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func duration(_ seconds: TimeInterval) -> String {
        let seconds = max(0, Int(seconds))
        switch seconds {
        case ..<60: return "\(seconds) s"
        case ..<3600: return "\(seconds / 60) min"
        case ..<86400: return "\(seconds / 3600) h \(seconds % 3600 / 60) min"
        default: return "\(seconds / 86400) d \(seconds % 86400 / 3600) h"
        }
    }

    static func time(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
    }

    static func day(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day())
    }

    /// Text as HTML text or attribute value.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}\
        h1{font-size:1.3em;margin:0}header p{color:#57606a;margin:.3em 0 1em}\
        table{border-collapse:collapse;width:100%}th,td{padding:.35em .6em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top;white-space:nowrap}\
        th{background:#f6f8fa;font-weight:600}small{font-weight:400;color:#57606a}\
        .num{font-variant-numeric:tabular-nums;white-space:nowrap}.id{font-family:ui-monospace,monospace}\
        .error{color:#9a3412;white-space:normal;min-width:16em}.empty{color:#57606a}
        """
}
