import Foundation
import Yams

/// Reads the policy file (spec/POLICY.md §2): YAML (JSON is YAML too), version 1. Unknown keys,
/// a missing or newer version, and rules that cannot be enforced are errors that say where.
public enum PolicyFile {
    public static func load(path: String) throws(PolicyError) -> Policy {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw PolicyError("\(path): \(error.localizedDescription)")
        }
        do {
            return try self.parse(text)
        } catch {
            throw PolicyError("\(path): \(error.description)")
        }
    }

    public static func parse(_ text: String) throws(PolicyError) -> Policy {
        let document: Document
        do {
            document = try YAMLDecoder().decode(Document.self, from: text)
        } catch let error as PolicyError {
            throw error
        } catch let DecodingError.dataCorrupted(context) where context.underlyingError is PolicyError {
            throw context.underlyingError as! PolicyError
        } catch let DecodingError.dataCorrupted(context) where context.underlyingError != nil {
            throw PolicyError("not a policy: \(context.underlyingError!)")
        } catch let DecodingError.dataCorrupted(context), let DecodingError.typeMismatch(_, context),
            let DecodingError.valueNotFound(_, context)
        {
            throw PolicyError("\(Self.path(context.codingPath)): \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw PolicyError("\(Self.path(context.codingPath + [key])): missing")
        } catch {
            throw PolicyError("not a policy: \(error)")
        }
        guard document.version == Policy.formatVersion else {
            throw PolicyError("version \(document.version): this build reads policy version \(Policy.formatVersion)")
        }
        let maxMessageBytes = document.limits?.maxMessageBytes ?? 1 << 20
        guard (2...(16 << 20)).contains(maxMessageBytes) else {
            throw PolicyError("limits.maxMessageBytes: \(maxMessageBytes) is outside 2…16777216")
        }
        func rules(_ entries: [Document.Rule]?, _ section: String) throws(PolicyError) -> [PolicyRule] {
            var rules: [PolicyRule] = []
            for (index, entry) in (entries ?? []).enumerated() {
                let name = entry.name ?? "\(section)[\(index)] \(entry.service)"
                do {
                    rules.append(
                        try PolicyRule(
                            name: name, service: try ServicePattern(entry.service), classes: Set(entry.class.values),
                            opaque: entry.opaque ?? false, fields: try entry.fields.map { try $0.map(FieldPattern.init) },
                            openMetadata: try (entry.openMetadata ?? []).map(FieldPattern.init),
                            maxMessageBytes: maxMessageBytes))
                } catch let error as PolicyError {
                    throw PolicyError("\(section)[\(index)]: \(error.description)")
                } catch {
                    throw PolicyError("\(section)[\(index)]: \(error)")
                }
            }
            return rules
        }
        return Policy(
            toPlane: try rules(document.toPlane, "toPlane"), fromPlane: try rules(document.fromPlane, "fromPlane"),
            maxMessageBytes: maxMessageBytes)
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text.isEmpty ? "the document" : text
    }

    /// The file as written. Keys are checked, so a misspelt one is an error rather than a rule
    /// that silently allows less (or more) than meant.
    struct Document: Decodable {
        var version: Int
        var limits: Limits?
        var toPlane: [Rule]?
        var fromPlane: [Rule]?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case version, limits, toPlane, fromPlane
        }

        init(from decoder: any Decoder) throws {
            let container = try Self.strictContainer(decoder, keyedBy: CodingKeys.self)
            self.version = try container.decode(Int.self, forKey: .version)
            self.limits = try container.decodeIfPresent(Limits.self, forKey: .limits)
            self.toPlane = try container.decodeIfPresent([Rule].self, forKey: .toPlane)
            self.fromPlane = try container.decodeIfPresent([Rule].self, forKey: .fromPlane)
        }

        struct Limits: Decodable {
            var maxMessageBytes: Int?

            enum CodingKeys: String, CodingKey, CaseIterable {
                case maxMessageBytes
            }

            init(from decoder: any Decoder) throws {
                let container = try Document.strictContainer(decoder, keyedBy: CodingKeys.self)
                self.maxMessageBytes = try container.decodeIfPresent(Int.self, forKey: .maxMessageBytes)
            }
        }

        struct Rule: Decodable {
            var name: String?
            var service: String
            var `class`: Classes
            var opaque: Bool?
            var fields: [String]?
            var openMetadata: [String]?

            enum CodingKeys: String, CodingKey, CaseIterable {
                case name, service, `class`, opaque, fields, openMetadata
            }

            init(from decoder: any Decoder) throws {
                let container = try Document.strictContainer(decoder, keyedBy: CodingKeys.self)
                self.name = try container.decodeIfPresent(String.self, forKey: .name)
                self.service = try container.decode(String.self, forKey: .service)
                self.class = try container.decode(Classes.self, forKey: .class)
                self.opaque = try container.decodeIfPresent(Bool.self, forKey: .opaque)
                self.fields = try container.decodeIfPresent([String].self, forKey: .fields)
                self.openMetadata = try container.decodeIfPresent([String].self, forKey: .openMetadata)
            }
        }

        /// `class: logs` or `class: [command, bulk]`.
        struct Classes: Decodable {
            var values: [PolicyClass]

            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                let names = try (try? container.decode(String.self)).map { [$0] } ?? container.decode([String].self)
                self.values = try names.map { name in
                    guard let value = PolicyClass(rawValue: name) else {
                        let known = PolicyClass.allCases.map(\.rawValue).joined(separator: ", ")
                        throw PolicyError("\(PolicyFile.path(decoder.codingPath)): unknown class \"\(name)\" (one of \(known))")
                    }
                    return value
                }
            }
        }

        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        static func strictContainer<Key: CodingKey & CaseIterable>(
            _ decoder: any Decoder, keyedBy: Key.Type
        ) throws -> KeyedDecodingContainer<Key> {
            let known = Set(Key.allCases.map(\.stringValue))
            for key in try decoder.container(keyedBy: AnyKey.self).allKeys where !known.contains(key.stringValue) {
                let expected = known.sorted().joined(separator: ", ")
                throw PolicyError(
                    "\(PolicyFile.path(decoder.codingPath + [key])): unknown key (expected one of \(expected))")
            }
            return try decoder.container(keyedBy: Key.self)
        }
    }
}
