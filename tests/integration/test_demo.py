"""`make demo` (hack/demo.py --once) on a machine with no cluster: starts its own control plane,
the operator and the receiver, posts the example events, prints the alerts table and a report,
shows the DryRun plan — and leaves no process or temporary directory behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(path: Path) -> list[str]:
    """Processes whose command line names a path under ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline[:200])
    return found


def test_demo_once_shows_alerts_and_report_and_cleans_up() -> None:
    # NB: a short private TMPDIR (unix socket paths must stay under 108 bytes): everything the
    # demo creates lands here, so leftovers are the demo's own, whatever else runs meanwhile.
    scratch = Path(tempfile.mkdtemp(prefix="ftd-"))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"TMPDIR": str(scratch)}
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
    leftovers = sorted(p.name for p in scratch.iterdir())
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    assert _processes_mentioning(scratch) == [], "processes left running"
    scratch.rmdir()
