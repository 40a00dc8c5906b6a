"""`make demo` (hack/demo.py --once) on a machine with no cluster: starts its own control plane,
the operator and the receiver, posts the example events, prints the alerts table and a report,
shows the DryRun plan — and leaves no process or temporary directory behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("falco-triage-cp-", "falco-triage-cluster-", "ft-operator-")


def _temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith(PREFIXES)}


def _orphans() -> list[str]:
    """Processes still referring to one of our temporary directories that no longer exists:
    what a demo that did not clean up would leave (other test runs' live ones are ignored)."""
    tmp = re.escape(tempfile.gettempdir())
    pattern = re.compile(tmp + r"/((?:" + "|".join(PREFIXES) + r")[A-Za-z0-9_]+)")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for match in pattern.finditer(cmdline):
            if not Path(tempfile.gettempdir(), match.group(1)).exists():
                found.append(cmdline[:200])
    return found


def test_demo_once_shows_alerts_and_report_and_cleans_up() -> None:
    before = _temp_dirs()
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py"), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "NAMESPACE" in out
    assert "RULE" in out
    assert "PHASE" in out
    for rule in (
        "Terminal shell in container",
        "Read sensitive file untrusted",
        "Clear Log Activities",
        "Create Privileged Pod",
    ):
        assert rule in out
    assert "# Falco alert: Clear Log Activities" in out
    assert "## Tune Falco" in out
    assert "Decision for the shell alert: DryRun: mark-for-quarantine" in out
    assert "falcotriage.io/quarantine: 'true'" in out
    created = _temp_dirs() - before
    assert created == set(), f"temporary directories left behind: {created}"
    assert _orphans() == [], "processes left running"
