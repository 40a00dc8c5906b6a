"""`falco-triage policy check`: every example policy passes; invalid documents are reported
with their index, name and field path and exit 1; other kinds are skipped; with an event,
the output names the winning policy, the actions in order and the planned objects in YAML,
deterministically; a bad event file exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from falco_triage.policy.check import EXIT_BAD_EVENT, EXIT_INVALID, EXIT_OK, check_policies
from falco_triage.remediation import preview_yaml
from tests.unit.factories import make_raw_event
from tests.unit.policy_factories import isolate_action, policy_body

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "policies").glob("*.yaml"))
ALL_EXAMPLES = "\n---\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES)


def _event(rule: str, **kwargs: object) -> bytes:
    return json.dumps(make_raw_event(rule, **kwargs)).encode()


def _dump(*docs: object) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def test_there_are_examples_of_every_kind() -> None:
    kinds = {yaml.safe_load(p.read_text(encoding="utf-8"))["kind"] for p in EXAMPLES}
    assert kinds == {"ResponsePolicy", "ClusterResponsePolicy"}
    modes = {yaml.safe_load(p.read_text(encoding="utf-8"))["spec"]["mode"] for p in EXAMPLES}
    assert modes == {"DryRun", "RequireApproval", "Enforce"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_policy_is_valid(path: Path) -> None:
    result = check_policies(path.read_text(encoding="utf-8"), source=path.name)
    assert result.exit_code == EXIT_OK, result.output
    assert "1 policies, 1 valid, 0 invalid" in result.output


def test_invalid_documents_are_reported_with_index_name_and_path() -> None:
    bad = policy_body("broken", actions=[isolate_action(allowCidrs=["10.0.0.1/8"])])
    text = _dump(policy_body("fine"), bad)
    result = check_policies(text, source="policies.yaml")
    assert result.exit_code == EXIT_INVALID
    assert "policies.yaml: document 1: ResponsePolicy/shop/fine: valid" in result.output
    assert "policies.yaml: document 2: ResponsePolicy/shop/broken: invalid" in result.output
    assert "  - spec.actions[0].isolatePod.allowCidrs[0]: '10.0.0.1/8' is not a valid CIDR" in (
        result.output
    )
    assert "2 policies, 1 valid, 1 invalid" in result.output


def test_schema_errors_are_reported_too() -> None:
    result = check_policies(_dump(policy_body("p", mode="Sometimes")))
    assert result.exit_code == EXIT_INVALID
    assert "  - spec.mode: Input should be 'DryRun', 'RequireApproval' or 'Enforce'" in (
        result.output
    )


def test_yaml_syntax_errors_exit_1() -> None:
    result = check_policies("kind: [unclosed", source="bad.yaml")
    assert result.exit_code == EXIT_INVALID
    assert result.output.startswith("bad.yaml: not valid YAML:")


def test_other_kinds_are_skipped_and_lists_unpacked() -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    listed = {"apiVersion": "v1", "kind": "List", "items": [policy_body("in-list")]}
    result = check_policies(_dump(config_map, None, listed, "just text"))
    assert "document 1: skipped ConfigMap/cm (not a policy)" in result.output
    assert "document 3: ResponsePolicy/shop/in-list: valid" in result.output
    assert "document 4: invalid: expected a mapping, got str" in result.output
    assert result.exit_code == EXIT_INVALID


def test_a_file_without_policies_fails() -> None:
    result = check_policies(_dump({"apiVersion": "v1", "kind": "ConfigMap"}))
    assert result.exit_code == EXIT_INVALID
    assert "no ResponsePolicy or ClusterResponsePolicy found" in result.output


def test_duplicate_policies_are_flagged() -> None:
    result = check_policies(_dump(policy_body("same"), policy_body("same")))
    assert "ResponsePolicy/shop/same is defined 2 times" in result.output


def test_against_a_shell_event_the_dry_run_example_wins() -> None:
    event = (ROOT / "examples" / "events" / "terminal-shell.json").read_bytes()
    result = check_policies(ALL_EXAMPLES, event=event, preview=preview_yaml)
    assert result.exit_code == EXIT_OK, result.output
    out = result.output
    assert "event 1: Notice 'Terminal shell in container' (syscall)" in out
    assert "  matches  ResponsePolicy/shop/label-interactive-shells" in out
    assert "decision: Matched: ResponsePolicy/shop/label-interactive-shells won" in out
    assert "mode DryRun; actions in order: mark-for-quarantine" in out
    assert "falcotriage.io/quarantine: 'true'" in out


def test_against_a_cryptominer_the_cluster_policy_isolates() -> None:
    event = _event("Known Cryptominer Process Executed", namespace="payments")
    production = {"falcotriage.io/environment": "production"}
    result = check_policies(
        ALL_EXAMPLES, event=event, preview=preview_yaml, namespace_labels=production
    )
    out = result.output
    assert "decision: Matched: ClusterResponsePolicy/isolate-cryptominers-and-c2 won over " in out
    assert "ClusterResponsePolicy/production-critical-notify" in out  # also matched
    assert "mode Enforce; actions in order: isolate, mark-compromised, page-security" in out
    assert "kind: NetworkPolicy" in out
    assert (
        "POST to the webhook URL in key 'url' of v1 Secret falco-triage/security-slack-webhook"
        in out
    )
    # The planned objects are valid YAML once the indentation is removed.
    planned = out.split("  planned objects:\n", 1)[1]
    docs = list(yaml.safe_load_all("\n".join(line[4:] for line in planned.splitlines())))
    assert any(d and d.get("kind") == "NetworkPolicy" for d in docs)


def test_protected_namespaces_are_refused_in_the_preview_too() -> None:
    event = _event("Known Cryptominer Process Executed", namespace="kube-system")
    result = check_policies(ALL_EXAMPLES, event=event, preview=preview_yaml)
    assert "decision: Refused:" in result.output
    assert "'kube-system' is protected" in result.output
    assert "planned objects" not in result.output


def test_no_match_says_nothing_would_run() -> None:
    event = _event("Read sensitive file untrusted", namespace="payments")
    result = check_policies(ALL_EXAMPLES, event=event)
    assert "decision: NoMatch: no valid policy matches; nothing would run" in result.output
    assert "no match ClusterResponsePolicy/production-critical-notify: " in result.output


def test_a_namespaceless_response_policy_is_assumed_in_the_events_namespace() -> None:
    text = _dump(policy_body("kustomized", namespace=None))
    result = check_policies(text, event=_event("Terminal shell in container", namespace="cart"))
    assert "matches  ResponsePolicy/cart/kustomized (namespace assumed from the event)" in (
        result.output
    )


def test_several_events_are_each_explained() -> None:
    event = (ROOT / "examples" / "events" / "attack-chain.ndjson").read_bytes()
    result = check_policies(ALL_EXAMPLES, event=event)
    assert result.exit_code == EXIT_OK
    assert "event 2:" in result.output


def test_a_bad_event_exits_2() -> None:
    result = check_policies(ALL_EXAMPLES, event=b"{not json", event_source="e.json")
    assert result.exit_code == EXIT_BAD_EVENT
    assert "e.json: " in result.output


def test_output_is_deterministic() -> None:
    event = _event("Known Cryptominer Process Executed")
    first = check_policies(ALL_EXAMPLES, event=event, preview=preview_yaml)
    assert first == check_policies(ALL_EXAMPLES, event=event, preview=preview_yaml)
