"""decide(): exactly one policy wins, by the documented precedence (namespaced before
cluster, then higher precedence, then name), whatever the input order; protected and
opted-out namespaces are refused whatever a policy says; rate limits stop a policy without
letting another step in; invalid policies are ignored while the others are still
evaluated; and the decision reads only the alert's spec."""

from __future__ import annotations

import importlib
import itertools
import typing
from datetime import timedelta

import pytest

from falco_triage.models.alert import DecisionOutcome, FalcoAlertSpec
from falco_triage.models.policy import Mode
from falco_triage.policy.decide import DecisionContext, decide
from falco_triage.settings import Settings
from tests.unit.policy_factories import (
    NOW,
    isolate_action,
    label_action,
    make_cluster_policy,
    make_context,
    make_policy,
    make_spec,
    notify_action,
)

# The module, not the function of the same name the package exports.
decide_module = importlib.import_module("falco_triage.policy.decide")
SHELL = "Terminal shell in container"
SPEC = make_spec(SHELL)
ANY_SHELL = {"rules": [SHELL]}


def test_no_policies_means_no_match() -> None:
    decision = decide(SPEC, [], make_context())
    assert decision.outcome == DecisionOutcome.NO_MATCH
    assert decision.summary == "No matching policy"
    assert decision.actions == []
    assert decision.decided_at == NOW


def test_no_match_explains_the_closest_misses() -> None:
    policy = make_policy("crypto", match={"rules": ["Known Cryptominer*"]})
    decision = decide(SPEC, [policy], make_context())
    assert decision.outcome == DecisionOutcome.NO_MATCH
    assert "ResponsePolicy/shop/crypto: spec.match.rules:" in decision.reason


def test_a_matching_policy_wins_with_its_actions_copied() -> None:
    actions = [label_action("first"), notify_action("second")]
    policy = make_policy("shells", mode="Enforce", actions=actions, ttl="1h30m", generation=7)
    decision = decide(SPEC, [policy], make_context())
    assert decision.outcome == DecisionOutcome.MATCHED
    assert decision.policy == "ResponsePolicy/shop/shells"
    assert decision.policy_generation == 7
    assert decision.mode == Mode.ENFORCE
    assert decision.actions == ["first", "second"]
    assert decision.action_specs == policy.spec.actions
    assert decision.ttl_seconds == 5400
    assert decision.summary == "Enforce: first, second"
    assert decision.also_matched == []


def test_namespaced_policy_beats_cluster_policy_of_higher_precedence() -> None:
    local = make_policy("local", precedence=-1000)
    cluster = make_cluster_policy("global", match=ANY_SHELL, precedence=1000)
    decision = decide(SPEC, [cluster, local], make_context())
    assert decision.policy == "ResponsePolicy/shop/local"
    assert decision.also_matched == ["ClusterResponsePolicy/global"]
    assert "over ClusterResponsePolicy/global" in decision.reason


def test_higher_precedence_then_name_decides_within_a_scope() -> None:
    low = make_cluster_policy("a-low", match=ANY_SHELL, precedence=1)
    high = make_cluster_policy("z-high", match=ANY_SHELL, precedence=10)
    tie = make_cluster_policy("b-tie", match=ANY_SHELL, precedence=10)
    decision = decide(SPEC, [low, high, tie], make_context())
    assert decision.policy == "ClusterResponsePolicy/b-tie"
    assert decision.also_matched == ["ClusterResponsePolicy/z-high", "ClusterResponsePolicy/a-low"]


def test_the_winner_does_not_depend_on_input_order() -> None:
    policies = [
        make_policy("b", precedence=5),
        make_policy("a", precedence=5),
        make_policy("c", precedence=6),
        make_cluster_policy("d", match=ANY_SHELL, precedence=99),
    ]
    decisions = {
        decide(SPEC, list(order), make_context()).model_dump_json()
        for order in itertools.permutations(policies)
    }
    assert len(decisions) == 1
    only = decide(SPEC, policies, make_context())
    assert only.policy == "ResponsePolicy/shop/c"
    assert only.also_matched == [
        "ResponsePolicy/shop/a",
        "ResponsePolicy/shop/b",
        "ClusterResponsePolicy/d",
    ]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_protected_namespaces_are_refused_whatever_the_policy(namespace: str) -> None:
    spec = make_spec(SHELL, namespace=namespace)
    policy = make_cluster_policy("everywhere", match={"namespaces": ["*"]}, mode="Enforce")
    decision = decide(spec, [policy], make_context())
    assert decision.outcome == DecisionOutcome.REFUSED
    assert decision.actions == []
    assert decision.action_specs == []
    assert decision.policy == "ClusterResponsePolicy/everywhere"
    assert f"Namespace '{namespace}' is protected" in decision.reason


def test_the_operator_namespace_and_configured_ones_are_protected() -> None:
    policy = make_cluster_policy("everywhere", match={"namespaces": ["*"]})
    own = decide(make_spec(SHELL, namespace="falco-triage"), [policy], make_context())
    assert own.outcome == DecisionOutcome.REFUSED
    context = make_context(protected_namespaces=frozenset({"vault"}))
    assert decide(make_spec(SHELL, namespace="vault"), [policy], context).outcome == (
        DecisionOutcome.REFUSED
    )


@pytest.mark.parametrize(
    ("setting", "labels", "refused"),
    [
        ("falcotriage.io/ignore", {"falcotriage.io/ignore": "true"}, True),
        ("falcotriage.io/ignore", {"falcotriage.io/ignore": ""}, True),
        ("falcotriage.io/ignore", {"falcotriage.io/ignore": "false"}, False),
        ("falcotriage.io/ignore", {}, False),
        ("security=off", {"security": "off"}, True),
        ("security=off", {"security": "on"}, False),
    ],
)
def test_the_opt_out_namespace_label(setting: str, labels: dict[str, str], refused: bool) -> None:
    context = make_context(opt_out_label=setting, namespace_labels=labels)
    decision = decide(SPEC, [make_policy()], context)
    expected = DecisionOutcome.REFUSED if refused else DecisionOutcome.MATCHED
    assert decision.outcome == expected
    if refused:
        assert "opted out" in decision.reason


def test_a_pod_label_cannot_opt_out() -> None:
    """Anyone who can create pods could exempt them; only namespace labels count."""
    context = make_context(pod_labels={"falcotriage.io/ignore": "true"})
    assert decide(SPEC, [make_policy()], context).outcome == DecisionOutcome.MATCHED


def test_rate_limit_stops_the_winner_and_nobody_steps_in() -> None:
    limited = make_policy("limited", precedence=10, rateLimit={"maxActions": 2, "window": "1h"})
    fallback = make_policy("fallback")
    recent = {
        "ResponsePolicy/shop/limited": [NOW - timedelta(minutes=5), NOW - timedelta(minutes=50)]
    }
    decision = decide(SPEC, [limited, fallback], make_context(recent_responses=recent))
    assert decision.outcome == DecisionOutcome.RATE_LIMITED
    assert decision.policy == "ResponsePolicy/shop/limited"
    assert decision.actions == []
    assert "2 responses in the last 1h (max 2)" in decision.reason


def test_responses_outside_the_window_do_not_count() -> None:
    limited = make_policy("limited", rateLimit={"maxActions": 2, "window": "1h"})
    recent = {"ResponsePolicy/shop/limited": [NOW - timedelta(minutes=5), NOW - timedelta(hours=2)]}
    decision = decide(SPEC, [limited], make_context(recent_responses=recent))
    assert decision.outcome == DecisionOutcome.MATCHED


def test_an_invalid_policy_is_ignored_and_the_others_still_decide() -> None:
    broken = make_policy("broken", precedence=100, actions=[isolate_action(allowCidrs=["nope"])])
    good = make_policy("good")
    decision = decide(SPEC, [broken, good], make_context())
    assert decision.outcome == DecisionOutcome.MATCHED
    assert decision.policy == "ResponsePolicy/shop/good"
    assert "Ignored invalid: ResponsePolicy/shop/broken." in decision.reason


def test_a_policy_that_breaks_evaluation_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    real = decide_module.validate_policy

    def explode_on_bomb(policy: typing.Any, **kwargs: typing.Any) -> list[str]:
        if policy.metadata["name"] == "bomb":
            raise RuntimeError("boom")
        return real(policy, **kwargs)

    monkeypatch.setattr(decide_module, "validate_policy", explode_on_bomb)
    decision = decide(SPEC, [make_policy("bomb", precedence=9), make_policy("ok")], make_context())
    assert decision.policy == "ResponsePolicy/shop/ok"
    assert "ResponsePolicy/shop/bomb" in decision.reason


def test_host_alerts_only_meet_cluster_policies_without_namespace_criteria() -> None:
    host = make_spec(SHELL, namespace=None)
    policies = [
        make_policy("local"),
        make_cluster_policy("scoped", match={"namespaces": ["*"]}, precedence=5),
        make_cluster_policy("all-shells", match=ANY_SHELL, actions=[notify_action()]),
    ]
    context = make_context(namespace_labels=None, pod_labels=None)
    decision = decide(host, policies, context)
    assert decision.outcome == DecisionOutcome.MATCHED
    assert decision.policy == "ClusterResponsePolicy/all-shells"


def test_context_from_settings() -> None:
    settings = Settings(namespace="sec", operator={"protected_namespaces": ["vault"]})
    context = DecisionContext.from_settings(settings, now=NOW, namespace_labels={}, pod_labels={})
    assert context.protected == frozenset({"vault", "sec"})
    assert context.opt_out_label == "falcotriage.io/ignore"


def test_decisions_are_deterministic() -> None:
    policies = [make_policy("a"), make_cluster_policy("b", match=ANY_SHELL)]
    assert decide(SPEC, policies, make_context()) == decide(SPEC, policies, make_context())


def test_the_decision_reads_only_the_alert_spec() -> None:
    """Nothing from status (analysis, LLM narrative) can reach a decision: it is not an input."""
    hints = typing.get_type_hints(decide)
    assert hints["spec"] is FalcoAlertSpec
    assert set(hints) == {"spec", "policies", "context", "return"}


def test_long_reasons_are_bounded() -> None:
    policies = [make_cluster_policy(f"p{i:02d}-" + "x" * 200, match=ANY_SHELL) for i in range(40)]
    decision = decide(SPEC, policies, make_context())
    assert len(decision.reason) <= 2048
    assert len(decision.also_matched) == 32
