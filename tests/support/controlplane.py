"""A real Kubernetes control plane for Falco Triage's integration tests.

Three ways to get one, chosen by :func:`control_plane_from_env`:

``built`` (default)
    Build ``tests/controlplane`` (etcd, kube-apiserver, kube-controller-manager and kubectl from
    the Kubernetes Go modules pinned there) with ``go build`` into ``.cache/controlplane/bin`` and
    run each component as its own process of that binary.
``envtest`` (``KUBEBUILDER_ASSETS`` set)
    Use the ``etcd``, ``kube-apiserver`` and ``kubectl`` binaries of a controller-runtime envtest
    asset directory. envtest ships no controller manager, so nothing garbage-collects owned
    objects or finishes deleting namespaces (``has_controller_manager`` is False).
``existing`` (``FALCO_TRIAGE_TEST_KUBECONFIG`` set)
    Use the cluster that kubeconfig points at; nothing is started or stopped, and the API server
    cannot be restarted.

Only the standard library and PyYAML are used, and nothing here imports pytest, so the module
also serves scripts and benchmarks::

    with control_plane_from_env(repo_root) as cp:
        cp.kubectl("get", "namespaces")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import yaml

Mode = Literal["built", "envtest", "existing"]

ENV_EXISTING_KUBECONFIG = "FALCO_TRIAGE_TEST_KUBECONFIG"
ENV_ENVTEST_ASSETS = "KUBEBUILDER_ASSETS"
ENV_KUBECTL = "FALCO_TRIAGE_TEST_KUBECTL"

# The control-plane sources, relative to the repository root, and where builds go (gitignored).
SOURCE_DIR = Path("tests/controlplane")
BUILD_DIR = Path(".cache/controlplane")

# etcd serves clients and peers on unix sockets named like etcd's own examples, created in the
# control plane's temporary directory (every component runs there): no port can collide.
_ETCD_CLIENT_SOCKET = "localhost:2379"
_ETCD_PEER_SOCKET = "localhost:2380"
_KCM = "kube-controller-manager"

# kube-apiserver is ready about 3 s after its start on an idle 2-core machine and within 10 s on
# a busy one (docs/development.md); 120 s leaves room for a loaded CI machine before we call it
# broken.
DEFAULT_READY_TIMEOUT = 120.0
# Components get this long to exit after SIGTERM before they are killed.
_TERMINATE_GRACE = 10.0
# How much of a component's log an error message quotes.
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or used."""


class NotSupportedError(ControlPlaneError):
    """The operation needs processes this mode does not own (for example an existing cluster)."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return f"{super().__str__()}\n{stderr}" if stderr else super().__str__()


def _log(message: str) -> None:
    sys.stderr.write(f"[controlplane] {message}\n")
    sys.stderr.flush()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log at {path}: {err})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build_controlplane(repo_root: Path) -> Path:
    """Build the control-plane binary and return its path.

    The binary goes to ``<repo_root>/.cache/controlplane/bin/controlplane`` with a ``kubectl``
    symlink beside it. ``go build`` is run every time: Go's build cache makes an unchanged
    rebuild take seconds, while a cold one (empty caches) takes many minutes, which is reported
    on stderr as it goes. Concurrent callers are serialised with a file lock.

    Raises ControlPlaneError, with the tail of the build log, if Go is missing or the build fails.
    """
    repo_root = repo_root.resolve()
    source = repo_root / SOURCE_DIR
    build_dir = repo_root / BUILD_DIR
    binary = build_dir / "bin" / "controlplane"
    log_path = build_dir / "build.log"
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError(
            "cannot build the test control plane: `go` is not on PATH. Install Go "
            f"(the version in {SOURCE_DIR}/go.mod), or set {ENV_ENVTEST_ASSETS} to envtest "
            f"binaries, or {ENV_EXISTING_KUBECONFIG} to a test cluster's kubeconfig."
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0")
    ldflags = _version_ldflags(_kubernetes_version(source / "go.mod"))
    cmd = [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(binary), "."]
    with (build_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _log(f"building {binary} (a cold build takes minutes; log: {log_path})")
        started = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)
            # A heartbeat so a cold build does not look like a hang.
            while True:
                try:
                    proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    _log(f"still building ... {time.monotonic() - started:.0f} s")
        if proc.returncode != 0:
            raise ControlPlaneError(
                f"building the test control plane failed ({' '.join(cmd)} in {source}, "
                f"exit {proc.returncode}); last lines of {log_path}:\n{_tail(log_path)}"
            )
        _log(f"built in {time.monotonic() - started:.1f} s")
        kubectl = binary.parent / "kubectl"
        if not kubectl.is_symlink():
            kubectl.unlink(missing_ok=True)
            kubectl.symlink_to(binary.name)
    return binary


def _kubernetes_version(go_mod: Path) -> str:
    """The k8s.io/kubernetes version that go.mod requires, such as v1.36.3."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\d+\.\d+\.\d+)\s*$", go_mod.read_text(), re.M)
    if match is None:
        raise ControlPlaneError(f"{go_mod} does not require k8s.io/kubernetes")
    return match.group(1)


def _version_ldflags(version: str) -> str:
    """Linker flags that stamp the Kubernetes version into the binary.

    NB: Kubernetes' own build sets these with -X; without them every component (and the
    server's /version) reports v0.0.0-master, which clients' version-skew checks trip over.
    """
    major, minor, _ = version.removeprefix("v").split(".")
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for name, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ):
            flags.append(f"-X {package}.{name}={value}")
    return " ".join(flags)


# --------------------------------------------------------------------------------------------
# What every mode offers
# --------------------------------------------------------------------------------------------


class Cluster:
    """A Kubernetes API to test against, reached with an admin kubeconfig.

    Subclasses start (or find) the cluster; this class holds what they share: running kubectl,
    applying files, minting ServiceAccount tokens and kubeconfigs that act as them.
    """

    mode: Mode
    #: False where no kube-controller-manager runs (envtest): owned objects are never collected.
    has_controller_manager: bool = True
    #: False where the API server is not ours to stop (an existing cluster).
    can_restart_apiserver: bool = True

    def __init__(self, kubectl_path: Path) -> None:
        self.kubectl_path = kubectl_path
        self._workdir: Path | None = None
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self._ca_data: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop_apiserver(self) -> None:
        raise NotSupportedError(f"stopping the API server is not supported in {self.mode} mode")

    def start_apiserver(self) -> None:
        raise NotSupportedError(f"starting the API server is not supported in {self.mode} mode")

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Wait until the API server's /readyz answers ok."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            result = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            if result.returncode == 0 and result.stdout.strip() == "ok":
                return
            last = (result.stderr or result.stdout).strip()
            time.sleep(0.5)
        raise ControlPlaneError(f"{self.server} not ready after {timeout:.0f} s: {last}")

    # -- facts ------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        """This run's temporary directory (logs, certificates, generated kubeconfigs)."""
        if self._workdir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._workdir

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig with cluster-admin rights (group system:masters)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("the control plane is not started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        """The API server's https URL."""
        if self._server is None:
            raise ControlPlaneError("the control plane is not started")
        return self._server

    # -- helpers ----------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as admin unless another kubeconfig is given).

        With ``check`` a non-zero exit raises KubectlError, whose message holds kubectl's stderr.
        """
        cmd = [
            str(self.kubectl_path),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # A private discovery cache: API server ports are reused across runs with other CRDs.
            f"--cache-dir={self.workdir / 'kube-cache'}",
            *args,
        ]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def apply_file(self, path: Path) -> subprocess.CompletedProcess[str]:
        """Server-side apply a manifest file (or a directory of them)."""
        return self.kubectl(
            "apply", "--server-side", "--field-manager=falco-triage-tests", "-f", str(path)
        )

    def create_token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """Mint a token for a ServiceAccount through the TokenRequest API."""
        result = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        )
        return result.stdout.strip()

    def kubeconfig_for_token(self, token: str, name: str) -> Path:
        """Write a kubeconfig that talks to this cluster as the bearer of ``token``."""
        cluster: dict[str, Any] = {"server": self.server}
        if self._ca_data:
            cluster["certificate-authority-data"] = self._ca_data
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
            "current-context": name,
        }
        path = self.workdir / "kubeconfigs" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------
# A control plane of our own processes (built and envtest modes)
# --------------------------------------------------------------------------------------------

# Control planes still running when the interpreter exits (an interrupted session) are stopped.
_running: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for cp in list(_running):
        cp.stop()


class ControlPlane(Cluster):
    """etcd, kube-apiserver and (when available) kube-controller-manager as child processes.

    Every component is a separate process in its own process group, with its output in
    ``<workdir>/logs/<component>.log``; ``stop()`` ends them all and deletes the directory.
    """

    def __init__(
        self,
        *,
        mode: Literal["built", "envtest"],
        etcd: Sequence[str],
        kube_apiserver: Sequence[str],
        kubectl: Path,
        kube_controller_manager: Sequence[str] | None = None,
        certs: Sequence[str] | None = None,
    ) -> None:
        """Describe the commands that run each component.

        ``certs`` is a command that writes the PKI into the directory given with ``--dir``
        (our binary's ``certs``); without it, openssl is used.
        """
        super().__init__(kubectl)
        self.mode = mode
        self._etcd_cmd = list(etcd)
        self._apiserver_cmd = list(kube_apiserver)
        self._kcm_cmd = list(kube_controller_manager) if kube_controller_manager else None
        self._certs_cmd = list(certs) if certs else None
        self.has_controller_manager = self._kcm_cmd is not None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._port = 0
        #: Seconds start() took: certificates, etcd, kube-apiserver up to its first ok /readyz.
        self.startup_seconds: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start etcd, kube-apiserver and kube-controller-manager; return once /readyz is ok."""
        if self._workdir is not None:
            raise ControlPlaneError("the control plane is already started")
        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="falco-triage-cp-"))
        _running.add(self)
        try:
            (self.workdir / "logs").mkdir()
            self._make_pki()
            self._port = _free_loopback_port()
            self._server = f"https://127.0.0.1:{self._port}"
            self._ca_data = base64.b64encode((self._pki / "ca.crt").read_bytes()).decode()
            self._write_admin_kubeconfig()
            self._start_etcd()
            self.start_apiserver()  # also starts kube-controller-manager
            self.startup_seconds = time.monotonic() - started
            took = self.startup_seconds
            _log(f"{self.mode} control plane ready at {self.server} in {took:.1f} s")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and delete the temporary directory."""
        for name in reversed(list(self._procs)):
            self._terminate(name)
        _running.discard(self)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._kubeconfig = None
        self._server = None

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (and kube-controller-manager); etcd and its data stay.

        NB: kube-controller-manager acts only through the API server, so it is stopped too and
        started afresh by start_apiserver(). One that lived through the outage would resume
        only after client-go's watch back-off and a relist (measured: up to a minute), which
        would make garbage collection in the tests after a restart slow and erratic.
        """
        if "kube-apiserver" not in self._procs:
            raise ControlPlaneError("kube-apiserver is not running")
        self._terminate(_KCM)
        self._terminate("kube-apiserver")

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port, with the same etcd and certificates.

        Returns once /readyz is ok, after starting kube-controller-manager (when this mode has
        one).
        """
        if "kube-apiserver" in self._procs:
            raise ControlPlaneError("kube-apiserver is already running")
        pki = self._pki
        self._spawn(
            "kube-apiserver",
            [
                *self._apiserver_cmd,
                f"--etcd-servers=unix://{self.workdir / _ETCD_CLIENT_SOCKET}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self._port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                # Signing and verification keys: the TokenRequest API (kubectl create token).
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # No controller creates "default" ServiceAccounts here, so the admission plugin
                # that requires them would reject every pod.
                "--disable-admission-plugins=ServiceAccount",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # NB: by default open watches (kopf's, the controller manager's) hold a stopping
                # API server for up to --request-timeout (60 s); this closes them at once.
                "--shutdown-watch-termination-grace-period=2s",
                # The "kubernetes" Service cannot have a loopback endpoint; nothing here uses it.
                "--endpoint-reconciler-type=none",
            ],
        )
        self.wait_ready()
        self._ensure_controller_manager()

    def _ensure_controller_manager(self) -> None:
        """Start kube-controller-manager unless it is running (called once the API is ready).

        NB: kube-controller-manager exits when the API server is not healthy within about ten
        seconds of its own start, so it is only ever started against a ready API server.
        """
        if self._kcm_cmd is None:
            return
        proc = self._procs.get(_KCM)
        if proc is not None:
            if proc.poll() is None:
                return
            _log(f"{_KCM} had exited with code {proc.returncode}; starting it again")
            del self._procs[_KCM]
        self._spawn(
            _KCM,
            [
                *self._kcm_cmd,
                f"--kubeconfig={self.kubeconfig}",
                # Only what the tests rely on: ownerReference GC and namespace deletion.
                "--controllers=garbage-collector-controller,namespace-controller",
                "--leader-elect=false",
                # No serving port: nothing probes it, and a port could collide.
                "--secure-port=0",
            ],
        )

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Poll /readyz until it answers ok; fail early, with the log, if a component exits."""
        context = ssl.create_default_context(cafile=str(self._pki / "ca.crt"))
        context.load_cert_chain(str(self._pki / "admin.crt"), str(self._pki / "admin.key"))
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                # NB: the URL is our own https one, never a file: URL.
                url = f"{self.server}/readyz"
                with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as err:
                # 500 lists the checks still failing (etcd, post-start hooks, ...).
                last = f"HTTP {err.code}: {err.read().decode(errors='replace').strip()}"
            except (OSError, ssl.SSLError) as err:
                last = str(err)
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"kube-apiserver at {self.server} not ready after {timeout:.0f} s "
                    f"({last}); last lines of its log:\n{_tail(self._log_path('kube-apiserver'))}"
                )
            time.sleep(0.2)

    # -- internals ----------------------------------------------------------------------------

    @property
    def _pki(self) -> Path:
        return self.workdir / "pki"

    def _log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _make_pki(self) -> None:
        if self._certs_cmd is not None:
            cmd = [*self._certs_cmd, f"--dir={self._pki}"]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ControlPlaneError(f"{' '.join(cmd)} failed:\n{result.stderr}")
        else:
            _openssl_pki(self._pki)

    def _write_admin_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self._pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "falco-triage-test",
                    "cluster": {"server": self.server, "certificate-authority-data": self._ca_data},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "admin", "context": {"cluster": "falco-triage-test", "user": "admin"}}
            ],
            "current-context": "admin",
        }
        self._kubeconfig = self.workdir / "admin.kubeconfig"
        _write_private(self._kubeconfig, yaml.safe_dump(config, sort_keys=False))

    def _start_etcd(self) -> None:
        client = f"unix://{_ETCD_CLIENT_SOCKET}"
        peer = f"unix://{_ETCD_PEER_SOCKET}"
        # Real etcd flag names, so an envtest etcd takes the same command line as ours.
        self._spawn(
            "etcd",
            [
                *self._etcd_cmd,
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        # kube-apiserver would wait for etcd anyway; waiting here names the culprit on failure.
        socket_path = self.workdir / _ETCD_CLIENT_SOCKET
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            self._check_alive()
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"etcd did not create {socket_path} within 30 s; last lines of its log:\n"
                    f"{_tail(self._log_path('etcd'))}"
                )
            time.sleep(0.05)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log_path = self._log_path(name)
        with log_path.open("a") as log:
            log.write(f"==> {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n")
            log.flush()
            # Own session = own process group, so stop() can signal everything it spawned.
            # CONTROLPLANE_PARENT_PID: our binary stops itself if this process dies unstopped.
            self._procs[name] = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=dict(os.environ, CONTROLPLANE_PARENT_PID=str(os.getpid())),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_alive(self) -> None:
        """Fail if etcd or kube-apiserver has exited (kube-controller-manager is restarted)."""
        for name, proc in self._procs.items():
            if name != _KCM and proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode}; last lines of its log:\n"
                    f"{_tail(self._log_path(name))}"
                )

    def _terminate(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, _TERMINATE_GRACE), (signal.SIGKILL, 5.0)):
            # The group may outlive its leader only in theory; signal it while it exists.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                _log(f"{name} still running {grace:.0f} s after {sig.name}")


def _free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, \
DNS:kubernetes.default.svc, IP:127.0.0.1, IP:::1, IP:10.0.0.1
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


def _openssl_pki(pki: Path) -> None:
    """Write the same files as ``controlplane certs`` with the openssl CLI (envtest mode).

    envtest mode must not need our Go build, and the launcher may use only the standard
    library and PyYAML, so the PKI comes from openssl, which every envtest machine has.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ControlPlaneError("envtest mode needs the openssl command to create certificates")
    pki.mkdir(mode=0o700, parents=True)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)

    def run(*args: str) -> None:
        result = subprocess.run(
            [openssl, *args], cwd=pki, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{result.stderr}")

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "ca", *ec,
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=falco-triage-test-ca")  # fmt: skip
    for name, subject, extensions in (
        ("apiserver", "/CN=kube-apiserver", "server"),
        ("admin", "/O=system:masters/CN=admin", "client"),
    ):
        run("req", "-new", "-config", "openssl.cnf", *ec, "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-extfile", "openssl.cnf",
            "-extensions", extensions, "-out", f"{name}.crt")  # fmt: skip
    run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
    run("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")


# --------------------------------------------------------------------------------------------
# Somebody else's cluster
# --------------------------------------------------------------------------------------------


class ExistingCluster(Cluster):
    """A cluster that is already running (``FALCO_TRIAGE_TEST_KUBECONFIG``): used, never owned."""

    mode: Mode = "existing"
    can_restart_apiserver = False

    def __init__(self, kubeconfig: Path, kubectl: Path) -> None:
        super().__init__(kubectl)
        self._given_kubeconfig = kubeconfig

    def start(self) -> None:
        """Read the server and CA of the kubeconfig's current context and check /readyz."""
        if not self._given_kubeconfig.is_file():
            raise ControlPlaneError(
                f"{ENV_EXISTING_KUBECONFIG}={self._given_kubeconfig} is not a file"
            )
        # Only a scratch directory for kubeconfigs made here; the cluster is left alone.
        self._workdir = Path(tempfile.mkdtemp(prefix="falco-triage-cluster-"))
        self._kubeconfig = self._given_kubeconfig
        try:
            view = self.kubectl("config", "view", "--minify", "--raw", "--flatten", "-o", "json")
            cluster = yaml.safe_load(view.stdout)["clusters"][0]["cluster"]
            self._server = str(cluster["server"])
            self._ca_data = cluster.get("certificate-authority-data")
            self.wait_ready(timeout=30)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Forget the cluster (it keeps running) and delete the scratch directory."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        self._kubeconfig = None
        self._server = None


# --------------------------------------------------------------------------------------------
# Choosing a mode
# --------------------------------------------------------------------------------------------


def control_plane_from_env(
    repo_root: Path, environ: Mapping[str, str] | None = None
) -> ControlPlane | ExistingCluster:
    """Return an unstarted cluster for the mode the environment asks for.

    ``FALCO_TRIAGE_TEST_KUBECONFIG`` wins over ``KUBEBUILDER_ASSETS``; with neither, the
    control plane is built from ``tests/controlplane`` (this can take minutes the first time).
    """
    env = os.environ if environ is None else environ
    existing = env.get(ENV_EXISTING_KUBECONFIG)
    if existing:
        kubectl = env.get(ENV_KUBECTL) or shutil.which("kubectl")
        if kubectl is None:
            raise ControlPlaneError(
                f"{ENV_EXISTING_KUBECONFIG} is set but no kubectl was found: put one on PATH "
                f"or set {ENV_KUBECTL}"
            )
        return ExistingCluster(Path(existing), Path(kubectl))

    assets = env.get(ENV_ENVTEST_ASSETS)
    if assets:
        bin_dir = Path(assets)
        missing = [n for n in ("etcd", "kube-apiserver", "kubectl") if not (bin_dir / n).is_file()]
        if missing:
            raise ControlPlaneError(
                f"{ENV_ENVTEST_ASSETS}={bin_dir} lacks {', '.join(missing)} "
                "(setup-envtest use -p path prints a complete directory)"
            )
        return ControlPlane(
            mode="envtest",
            etcd=[str(bin_dir / "etcd")],
            kube_apiserver=[str(bin_dir / "kube-apiserver")],
            kubectl=bin_dir / "kubectl",
        )

    binary = build_controlplane(repo_root)
    return ControlPlane(
        mode="built",
        etcd=[str(binary), "etcd"],
        kube_apiserver=[str(binary), "kube-apiserver"],
        kube_controller_manager=[str(binary), "kube-controller-manager"],
        kubectl=binary.parent / "kubectl",
        certs=[str(binary), "certs"],
    )


__all__ = [
    "ENV_ENVTEST_ASSETS",
    "ENV_EXISTING_KUBECONFIG",
    "ENV_KUBECTL",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "KubectlError",
    "Mode",
    "NotSupportedError",
    "build_controlplane",
    "control_plane_from_env",
]
