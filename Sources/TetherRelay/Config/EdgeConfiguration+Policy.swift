import Tether
import TetherPolicy
import TetherWire

extension EdgeConfiguration {
    /// What the customer's policy does not allow (spec/POLICY.md §3): a forward's service and
    /// class toward the plane, an expose's target from the plane. An edge refuses to start any of
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
        for expose in self.exposes where !policy.fromPlane.contains(where: { $0.service.matches(expose.name) }) {
            problems.append(
                "expose \(expose.name): the policy has no fromPlane rule for it; add one with opaque: true")
        }
        return problems
    }
}
