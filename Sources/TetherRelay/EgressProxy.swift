import Foundation
import NIOCore
import NIOHTTP1

/// An HTTP CONNECT proxy on the edge's way out (README "Egress proxy"): the edge connects to the
/// proxy, asks it to `CONNECT hub:port` (the hub's name, as configured: the proxy resolves it and
/// may allow by name), and runs TLS to the hub inside the tunnel — the proxy sees only TLS. Hubs
/// that `noProxy` matches are dialed directly.
public struct EgressProxy: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var credentials: Credentials?
    public var noProxy: NoProxy

    /// How the edge authenticates to the proxy (`Proxy-Authorization`).
    public enum Credentials: Sendable, Hashable {
        case basic(user: String, password: Secret)
        case bearer(token: Secret)
    }

    /// A secret given in the configuration or the environment, or a file read again on every dial
    /// (so a rotated password needs no restart). Never logged.
    public enum Secret: Sendable, Hashable {
        case value(String)
        case file(String)

        func read() throws -> String {
            switch self {
            case .value(let value):
                return value
            case .file(let path):
                do {
                    let text = try String(contentsOfFile: path, encoding: .utf8)
                    return text.trimmingCharacters(in: .whitespacesAndNewlines)
                } catch {
                    throw EgressProxyError("cannot read the proxy credential file \(path): \(error.localizedDescription)")
                }
            }
        }
    }

    public init(host: String, port: Int, credentials: Credentials? = nil, noProxy: NoProxy = NoProxy()) {
        self.host = host
        self.port = port
        self.credentials = credentials
        self.noProxy = noProxy
    }

    /// `http://[user[:password]@]host[:port][/]`, as in `HTTPS_PROXY`; the port defaults to 80 and
    /// user and password are percent-decoded. A proxy reached over TLS (`https://`) is not supported.
    public init(url: String, noProxy: NoProxy = NoProxy()) throws(EgressProxyError) {
        let text = url.contains("://") ? url : "http://" + url
        guard let components = URLComponents(string: text),
            let host = components.host?.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), !host.isEmpty
        else {
            throw EgressProxyError("\(Self.redacted(url)): not a proxy URL (expected http://host:port)")
        }
        guard components.scheme?.lowercased() == "http" else {
            throw EgressProxyError("\(Self.redacted(url)): only http:// proxies are supported (CONNECT over plain HTTP)")
        }
        guard components.path.isEmpty || components.path == "/", components.query == nil else {
            throw EgressProxyError("\(Self.redacted(url)): a proxy URL has no path or query")
        }
        var credentials: Credentials?
        if let user = components.user?.removingPercentEncoding, !user.isEmpty {
            credentials = .basic(user: user, password: .value(components.password?.removingPercentEncoding ?? ""))
        }
        let port = components.port ?? 80
        guard (1...65_535).contains(port) else { throw EgressProxyError("\(Self.redacted(url)): port out of range") }
        self.init(host: host, port: port, credentials: credentials, noProxy: noProxy)
    }

    /// The proxy `HTTPS_PROXY` (or `https_proxy`) names, with `NO_PROXY` (or `no_proxy`); nil when
    /// neither is set or it is empty.
    public static func fromEnvironment(_ environment: [String: String]) throws(EgressProxyError) -> EgressProxy? {
        guard let url = environment["HTTPS_PROXY"] ?? environment["https_proxy"], !url.isEmpty else { return nil }
        return try EgressProxy(url: url, noProxy: NoProxy(environment["NO_PROXY"] ?? environment["no_proxy"] ?? ""))
    }

    /// The CONNECT request's headers: `Proxy-Authorization` when there are credentials.
    func connectHeaders(for target: String) throws -> HTTPHeaders {
        var headers = HTTPHeaders([("Host", target)])
        switch self.credentials {
        case .basic(let user, let password):
            let pair = Data("\(user):\(try password.read())".utf8).base64EncodedString()
            headers.add(name: "Proxy-Authorization", value: "Basic \(pair)")
        case .bearer(let token):
            headers.add(name: "Proxy-Authorization", value: "Bearer \(try token.read())")
        case nil:
            break
        }
        return headers
    }

    /// How the proxy is named in logs: its address, never its credentials.
    public var description: String { "\(self.host):\(self.port)" }

    /// A URL with its user information removed, for error messages.
    static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        let start = url.range(of: "://").map(\.upperBound) ?? url.startIndex
        return String(url[..<start]) + "…@" + String(url[url.index(after: at)...])
    }
}

/// The hosts dialed without the proxy, as in `NO_PROXY`: a comma- or space-separated list of
/// host names (each matches itself and its subdomains; a leading dot is ignored), IP addresses,
/// CIDR blocks (`10.0.0.0/8`, `fd00::/8`), or `*` for every host. Ports in entries are ignored.
public struct NoProxy: Sendable, Equatable {
    private var everything = false
    private var names: [String] = []
    private var blocks: [Block] = []

    private struct Block: Sendable, Equatable {
        var network: [UInt8]
        var prefix: Int
    }

    public init(_ list: String = "") {
        for raw in list.split(whereSeparator: { $0 == "," || $0 == " " }) {
            var entry = raw.trimmingCharacters(in: .whitespaces).lowercased()
            if entry == "*" {
                self.everything = true
                continue
            }
            if let slash = entry.firstIndex(of: "/"), let prefix = Int(entry[entry.index(after: slash)...]),
                let network = Self.octets(String(entry[..<slash])), (0...network.count * 8).contains(prefix)
            {
                self.blocks.append(Block(network: network, prefix: prefix))
                continue
            }
            if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
                entry = String(entry[entry.index(after: entry.startIndex)..<close])
            } else if entry.filter({ $0 == ":" }).count == 1, let colon = entry.firstIndex(of: ":") {
                entry = String(entry[..<colon])  // host:port
            }
            if let address = Self.octets(entry) {
                self.blocks.append(Block(network: address, prefix: address.count * 8))
            } else {
                self.names.append(entry.hasPrefix(".") ? String(entry.dropFirst()) : entry)
            }
        }
    }

    /// Whether `host` (a name or an IP literal) is dialed directly.
    public func bypasses(_ host: String) -> Bool {
        if self.everything { return true }
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let address = Self.octets(host) {
            return self.blocks.contains { block in
                block.network.count == address.count && Self.matches(address, block.network, prefix: block.prefix)
            }
        }
        return self.names.contains { host == $0 || host.hasSuffix("." + $0) }
    }

    private static func matches(_ address: [UInt8], _ network: [UInt8], prefix: Int) -> Bool {
        for bit in 0..<prefix where (address[bit / 8] ^ network[bit / 8]) & (0x80 >> UInt8(bit % 8)) != 0 {
            return false
        }
        return true
    }

    /// An IPv4 or IPv6 literal's octets; nil for a name.
    private static func octets(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }
}

/// A proxy URL or setting that cannot be used, or a tunnel the proxy did not open.
public struct EgressProxyError: Error, CustomStringConvertible, Sendable, Hashable {
    /// The reconnect counter's `reason`: `proxy-config`, `proxy-auth`, `proxy-refused`, `proxy-timeout`.
    public var reason: String
    public var description: String

    public init(_ description: String, reason: String = "proxy-config") {
        self.reason = reason
        self.description = description
    }

    /// Dialing again cannot help until someone changes something: the settings, the credentials.
    var isPermanent: Bool { self.reason == "proxy-config" || self.reason == "proxy-auth" }
}
