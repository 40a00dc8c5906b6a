"""`falco-triage analyze` works offline on the bundled examples, in every format, from a file or
stdin, and fails with a clear message (exit 2) on bad input — run as the installed command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "events"


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["falco-triage", "analyze", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )


def test_readme_first_command_prints_a_report() -> None:
    result = _run(str(EXAMPLES / "terminal-shell.json"))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "Falco alert: Terminal shell in container" in text
    assert "shop" in text
    assert "web-7d9f8c6b5-x2k4q" in text
    assert "\x1b[" not in text  # not a terminal: no colour


def test_markdown_format_has_all_sections() -> None:
    result = _run("--format", "markdown", str(EXAMPLES / "clear-log-activities.json"))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for heading in (
        "## Summary",
        "## What happened",
        "## Where",
        "## MITRE ATT&CK",
        "## Why it matters",
        "## Is it benign?",
        "## Investigate",
        "## Mitigate",
        "## Tune Falco",
        "## References",
    ):
        assert heading in text
    assert "/var/log/dpkg.log" in text


def test_json_format_many_events_from_stdin() -> None:
    data = (EXAMPLES / "attack-chain.ndjson").read_bytes()
    result = _run("--format", "json", "-", stdin=data)
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    assert [d["rule"] for d in docs] == [
        "Terminal shell in container",
        "Read sensitive file untrusted",
        "Clear Log Activities",
        "Create Privileged Pod",
    ]
    assert docs[3]["where"]["kind"] == "KubernetesObject"


def test_color_always_uses_ansi_and_never_does_not() -> None:
    path = str(EXAMPLES / "terminal-shell.json")
    assert b"\x1b[" in _run("--color", "always", path).stdout
    assert b"\x1b[" not in _run("--color", "never", path).stdout


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rule": "x"', encoding="utf-8")
    result = _run(str(bad))
    assert result.returncode == 2
    assert result.stderr.decode().startswith("falco-triage analyze: ")
    assert b"Traceback" not in result.stderr
    missing = _run(str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert b"cannot read" in missing.stderr
