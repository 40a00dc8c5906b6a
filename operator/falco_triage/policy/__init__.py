"""Response policies: validation, matching and the decision, all pure.

``validate`` says what is wrong with a policy, ``match`` whether it applies to an alert (and
which criterion said no), ``decide`` which single policy responds and whether safety rules
let it, ``check`` is the offline ``falco-triage policy check``.
"""

from falco_triage.policy.check import CheckResult, check_policies
from falco_triage.policy.decide import DecisionContext, Evaluation, decide, evaluate
from falco_triage.policy.duration import parse_duration
from falco_triage.policy.match import MatchResult, match_policy
from falco_triage.policy.refs import AnyPolicy, policy_ref, precedence_key
from falco_triage.policy.validate import (
    ParsedPolicy,
    parse_policy,
    validate_policy,
    validity_condition,
)

__all__ = [
    "AnyPolicy",
    "CheckResult",
    "DecisionContext",
    "Evaluation",
    "MatchResult",
    "ParsedPolicy",
    "check_policies",
    "decide",
    "evaluate",
    "match_policy",
    "parse_duration",
    "parse_policy",
    "policy_ref",
    "precedence_key",
    "validate_policy",
    "validity_condition",
]
