"""Tools the test suite and ``make generate`` need: a real ``helm``, built from pinned modules.

``helm_binary(repo_root)`` returns the ``helm`` to use:

- with ``FALCO_TRIAGE_USE_SYSTEM_HELM=1``, the ``helm`` on ``PATH``;
- otherwise ours: ``helm.sh/helm/v3/cmd/helm`` at the version pinned in ``tests/tools/helm/go.mod``
  (a ``tool`` directive), built with ``go build`` into ``.cache/tools/bin/helm`` with the same
  version flags as Helm's own release builds. The build is skipped while the binary matches the
  pinned ``go.mod``/``go.sum``; a cold build (empty Go caches) takes minutes, see
  docs/development.md.

It is also the generator behind ``make generate``'s chart outputs::

    python -m tests.support.tools render-manifests [--check]     # manifests/install.yaml
    python -m tests.support.tools render-chart-readme [--check]  # the chart README's values table
    python -m tests.support.tools helm [ARGS...]                 # run our helm

Only the standard library and PyYAML are used; nothing here imports pytest.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ENV_USE_SYSTEM_HELM = "FALCO_TRIAGE_USE_SYSTEM_HELM"

# Relative to the repository root.
HELM_MODULE_DIR = Path("tests/tools/helm")
TOOLS_BIN_DIR = Path(".cache/tools/bin")
CHART_DIR = Path("charts/falco-triage")
MANIFESTS_DIR = Path("manifests")
INSTALL_MANIFEST = MANIFESTS_DIR / "install.yaml"

HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"

# The plain-manifest install: release name and namespace as in docs/install.md.
RELEASE_NAME = "falco-triage"
RELEASE_NAMESPACE = "falco-triage"
# NB: left to itself the chart generates a random bearer token into a Secret, which would make
# every render differ (and put a credential in Git). The plain manifests name a Secret the user
# creates instead; docs/install.md says how.
MANIFEST_VALUES = ("receiver.auth.existingSecret=falco-triage-receiver-token",)

README_START = "<!-- values:start -->"
README_END = "<!-- values:end -->"

# `go build` prints nothing while it works; say something this often so a cold build does not
# look like a hang.
_HEARTBEAT_SECONDS = 30
# How much of the build log an error quotes.
_LOG_TAIL_LINES = 40


class ToolError(RuntimeError):
    """A tool could not be found, built or run."""


def _log(message: str) -> None:
    sys.stderr.write(f"[tools] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# helm
# --------------------------------------------------------------------------------------------


def helm_binary(repo_root: Path) -> Path:
    """The ``helm`` to use: the system one if asked for, else ours (built on first use)."""
    if os.environ.get(ENV_USE_SYSTEM_HELM) == "1":
        found = shutil.which("helm")
        if found is None:
            raise ToolError(f"{ENV_USE_SYSTEM_HELM}=1 but there is no `helm` on PATH")
        return Path(found)
    return build_helm(repo_root)


def _stamp_for(module_dir: Path) -> str:
    """What the binary was built from: the pinned module files and the Go version."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module_dir / name).read_bytes())
    go_version = subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=False
    ).stdout.strip()
    digest.update(go_version.encode())
    return digest.hexdigest()


def _module_versions(module_dir: Path, env: dict[str, str], *modules: str) -> list[str]:
    result = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Version}}", *modules],
        cwd=module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ToolError(f"go list -m {' '.join(modules)} failed in {module_dir}:\n{result.stderr}")
    return result.stdout.split()


def _helm_ldflags(module_dir: Path, env: dict[str, str]) -> str:
    """The -X flags Helm's Makefile sets: its version, and the Kubernetes version it assumes
    when there is no cluster (``helm template``, ``helm lint``). Without them helm reports
    Kubernetes v1.20 and charts with a newer ``kubeVersion`` fail to render."""
    helm_version, client_go = _module_versions(
        module_dir, env, "helm.sh/helm/v3", "k8s.io/client-go"
    )
    match = re.fullmatch(r"v0\.(\d+)\.\d+.*", client_go)
    if match is None:
        raise ToolError(f"unexpected k8s.io/client-go version {client_go!r}")
    # client-go v0.N tracks Kubernetes v1.N.
    major, minor = "1", match.group(1)
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={helm_version}"]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor={major}", f"-X {package}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def build_helm(repo_root: Path) -> Path:
    """Build (or reuse) ``.cache/tools/bin/helm`` and return its path.

    Raises ToolError, with the tail of the build log, if Go is missing or the build fails.
    Concurrent callers (pytest workers, ``make generate``) are serialised with a file lock.
    """
    repo_root = repo_root.resolve()
    module_dir = repo_root / HELM_MODULE_DIR
    bin_dir = repo_root / TOOLS_BIN_DIR
    binary = bin_dir / "helm"
    stamp_path = bin_dir / "helm.stamp"
    log_path = bin_dir / "helm-build.log"
    if shutil.which("go") is None:
        raise ToolError(
            "cannot build helm: `go` is not on PATH. Install Go (the version in "
            f"{HELM_MODULE_DIR}/go.mod), or set {ENV_USE_SYSTEM_HELM}=1 to use the helm on PATH."
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    with (bin_dir / "helm.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _stamp_for(module_dir)
        if binary.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
            return binary
        env = dict(os.environ, CGO_ENABLED="0")
        cmd = [
            "go",
            "build",
            "-trimpath",
            f"-ldflags={_helm_ldflags(module_dir, env)}",
            "-o",
            str(binary),
            HELM_PACKAGE,
        ]
        _log(f"building {binary} (a cold build takes minutes; log: {log_path})")
        started = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                cmd, cwd=module_dir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            while True:
                try:
                    proc.wait(timeout=_HEARTBEAT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    _log(f"still building helm ... {time.monotonic() - started:.0f} s")
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
            raise ToolError(
                f"building helm failed ({' '.join(cmd)} in {module_dir}, exit "
                f"{proc.returncode}); last lines of {log_path}:\n{tail}"
            )
        stamp_path.write_text(stamp)
        _log(f"built helm in {time.monotonic() - started:.1f} s")
    return binary


def run_helm(
    repo_root: Path,
    *args: str,
    helm: Path | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run helm (``helm``, else :func:`helm_binary`) from the repository root with a private,
    empty Helm home.

    NB: the private HELM_*_HOME keeps a developer's repositories, plugins and registry logins
    out of the results, and keeps helm from writing into ``~``.
    """
    helm = helm or helm_binary(repo_root)
    home = repo_root.resolve() / ".cache" / "tools" / "helm-home"
    env = dict(
        os.environ,
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    result = subprocess.run(
        [str(helm), *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ToolError(
            f"helm {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr}"
        )
    return result


# --------------------------------------------------------------------------------------------
# manifests/install.yaml
# --------------------------------------------------------------------------------------------


def _manifest_header() -> str:
    sets = " ".join(f"--set {value}" for value in MANIFEST_VALUES)
    return (
        "# Generated by `make generate` (python -m tests.support.tools render-manifests) from\n"
        f"# charts/falco-triage: helm template {RELEASE_NAME} charts/falco-triage \\\n"
        f"#   --namespace {RELEASE_NAMESPACE} --include-crds {sets}\n"
        "# Do not edit: change the chart and regenerate.\n"
        "#\n"
        "# The receiver's bearer token is not in this file. Create it before (or after) applying:\n"
        f"#   kubectl create namespace {RELEASE_NAMESPACE}\n"
        f"#   kubectl -n {RELEASE_NAMESPACE} create secret generic falco-triage-receiver-token \\\n"
        '#     --from-literal=token="$(openssl rand -hex 32)"\n'
        "# See docs/install.md.\n"
    )


def render_manifests(repo_root: Path) -> str:
    """The text of manifests/install.yaml: a Namespace, then the chart rendered with its CRDs."""
    args = [
        "template",
        RELEASE_NAME,
        str(CHART_DIR),
        "--namespace",
        RELEASE_NAMESPACE,
        "--include-crds",
    ]
    for value in MANIFEST_VALUES:
        args += ["--set", value]
    rendered = run_helm(repo_root, *args).stdout
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RELEASE_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "falco-triage"},
        },
    }
    return _manifest_header() + "---\n" + yaml.safe_dump(namespace, sort_keys=False) + rendered


# --------------------------------------------------------------------------------------------
# The chart README's values table, from the `# --` comments in values.yaml
# --------------------------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-]+):(?:\s|$)")


def values_docs(values_path: Path) -> dict[str, str]:
    """Dotted value path → its description, from ``# -- text`` comments (continued by the
    following comment lines) directly above the key."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:  # a blank line, a list item or a scalar continuation
            pending = []
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        if pending:
            docs[".".join(key for _, key in stack)] = " ".join(pending)
        pending = []
    return docs


def _lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def undocumented_values(chart_dir: Path) -> list[str]:
    """Leaf values with no description on themselves or on an enclosing key."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8"))
    docs = values_docs(chart_dir / "values.yaml")
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if path and path in docs:
            return
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else key)
        else:
            missing.append(path)

    walk(values, "")
    return missing


def values_table(chart_dir: Path) -> str:
    """The Markdown table of every documented value, in values.yaml order."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8"))
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, description in values_docs(chart_dir / "values.yaml").items():
        value = _lookup(values, path)
        default = json.dumps(value, separators=(",", ":")).replace("|", "\\|")
        text = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_name(value)} | `{default}` | {text} |")
    return "\n".join(rows) + "\n"


def render_chart_readme(repo_root: Path) -> str:
    """The chart README with its values table regenerated between the markers."""
    readme = (repo_root / CHART_DIR / "README.md").read_text(encoding="utf-8")
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ToolError(f"{CHART_DIR}/README.md lacks the {README_START} / {README_END} markers")
    table = values_table(repo_root / CHART_DIR)
    return readme[: start + len(README_START)] + "\n" + table + readme[end:]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _write_or_check(path: Path, text: str, *, check: bool) -> int:
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if current == text:
        return 0
    if check:
        _log(f"{path} is out of date; run `make generate`")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _log(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.tools", description=__doc__)
    parser.add_argument("--repo-root", type=Path, default=Path(__file__).resolve().parents[2])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("render-manifests", "write manifests/install.yaml from the chart"),
        ("render-chart-readme", "write the values table of charts/falco-triage/README.md"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--check", action="store_true", help="fail if the file is out of date")
    sub.add_parser("helm-path", help="print the path of the helm to use (building it if needed)")
    helm = sub.add_parser("helm", help="run our helm with the remaining arguments")
    helm.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    root: Path = args.repo_root.resolve()
    try:
        if args.command == "render-manifests":
            return _write_or_check(
                root / INSTALL_MANIFEST, render_manifests(root), check=args.check
            )
        if args.command == "render-chart-readme":
            readme = root / CHART_DIR / "README.md"
            return _write_or_check(readme, render_chart_readme(root), check=args.check)
        if args.command == "helm-path":
            print(helm_binary(root))
            return 0
        return subprocess.run([str(helm_binary(root)), *args.args], check=False).returncode
    except ToolError as err:
        _log(str(err))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
