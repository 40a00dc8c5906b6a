"""`falco-triage policy check` validates policy files offline for GitOps pipelines: exit 0 for
the bundled examples, 1 naming the problem for an invalid policy, 2 for an unreadable event,
and with --against it shows the winning policy and the objects it would create."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["falco-triage", "policy", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )


def test_bundled_example_policies_are_valid() -> None:
    result = _check(*sorted(str(p) for p in (ROOT / "examples" / "policies").glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "invalid" not in result.stdout.replace("0 invalid", "")


def test_invalid_policy_fails_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: falcotriage.io/v1alpha1\nkind: ResponsePolicy\n"
        "metadata: {name: bad, namespace: shop}\n"
        "spec:\n  match: {rules: ['Terminal shell in container']}\n  mode: Enforce\n"
        "  ttl: soon\n  actions:\n  - name: iso\n    isolatePod: {allowCidrs: ['10.0.0.0/33']}\n",
        encoding="utf-8",
    )
    result = _check(str(bad))
    assert result.returncode == 1
    assert "ResponsePolicy/shop/bad: invalid" in result.stdout
    assert "ttl" in result.stdout


def test_against_shows_winner_and_planned_objects() -> None:
    result = _check(
        str(ROOT / "examples" / "policies" / "shell-in-container-dry-run.yaml"),
        "--against",
        str(ROOT / "examples" / "events" / "terminal-shell.json"),
    )
    assert result.returncode == 0, result.stderr
    assert "decision: Matched" in result.stdout
    assert "falcotriage.io/quarantine" in result.stdout


def test_unreadable_event_is_exit_2(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{not json", encoding="utf-8")
    policy = str(ROOT / "examples" / "policies" / "shell-in-container-dry-run.yaml")
    assert _check(policy, "--against", str(event)).returncode == 2
    assert _check(policy, "--against", str(tmp_path / "missing.json")).returncode == 2
