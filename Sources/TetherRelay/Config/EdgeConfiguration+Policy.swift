import Tether
import TetherPolicy
import TetherWire

extension EdgeConfiguration {
    /// What the customer's policy does not allow (spec/POLICY.md §3): a forward's service and
    /// class toward the plane, a metadata listener's service, an expose's target or a log source from
    /// the plane (spec/LOGS.md §1). An edge refuses to start any of
    /// these; `tether check-config` lists them all.
    public func problems(against policy: Policy) -> [String] {
        var problems: [String] = []
        for forward in self.forwards {
            let policyClass = PolicyClass(forward.streamClass)
            if case .refused(let rule, let reason) = policy.decide(.toPlane, service: forward.service, class: policyClass) {
                problems.append(
                    "forward \(forward.name): the policy does not allow \(forward.service) (\(policyClass.rawValue)) "
                        + "toward the plane (\(rule): \(reason)); add a toPlane rule with opaque: true")
            }
        }
        for listener in self.metadata {
            if case .refused(let rule, let reason) = policy.decide(.toPlane, service: listener.service, class: .metadata) {
                problems.append(
                    "metadata \(listener.name): the policy does not allow \(listener.service) (metadata) toward the plane "
                        + "(\(rule): \(reason)); add a toPlane rule with the fields that may leave")
            }
        }
        for expose in self.exposes where !policy.fromPlane.contains(where: { $0.service.matches(expose.name) }) {
            problems.append(
                "expose \(expose.name): the policy has no fromPlane rule for it; add one with opaque: true")
        }
        for source in self.logs {
            if case .refused(let rule, let reason) = policy.decide(.fromPlane, service: source.name, class: .logs) {
                problems.append(
                    "logs \(source.name): the policy does not allow the plane to follow it (\(rule): \(reason)); "
                        + "add a fromPlane rule with class: [logs] and opaque: true")
            }
        }
        return problems
    }
}
