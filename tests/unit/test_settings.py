"""Settings come from FALCO_TRIAGE_* variables and the YAML file in FALCO_TRIAGE_CONFIG (the
environment wins), and an invalid value stops the process with a message naming it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from falco_triage.settings import load_settings


def test_defaults_are_safe() -> None:
    settings = load_settings()
    assert settings.ingest.auth_disabled is False
    assert "kube-system" in settings.operator.protected_namespaces
    assert settings.operator.retention.max_per_namespace == 300


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "namespace: triage\noperator:\n  retention:\n    max_age: 2d\n    max_per_namespace: 50\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("FALCO_TRIAGE_CONFIG", str(config))
    monkeypatch.setenv("FALCO_TRIAGE_OPERATOR__RETENTION__MAX_PER_NAMESPACE", "70")
    settings = load_settings()
    assert settings.namespace == "triage"
    assert settings.operator.retention.max_age == "2d"
    assert settings.operator.retention.max_per_namespace == 70


def test_invalid_value_is_a_clear_error_at_start(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "FALCO_TRIAGE_OPERATOR__RETENTION__MAX_AGE": "a week"}
    result = subprocess.run(
        ["falco-triage", "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert "operator.retention.max_age" in result.stderr
    assert "Traceback" not in result.stderr
