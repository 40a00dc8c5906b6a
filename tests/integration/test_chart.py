"""The Helm chart, checked with a real helm and a real API server.

It proves that the chart lints and renders without warnings; that each remediation action's
RBAC block is rendered exactly when the action is enabled; that the receiver's account can do
nothing but write FalcoAlerts; that the settings it renders are ones the settings model accepts;
that the schema rejects bad values naming them; that NOTES give the receiver's address; that
``manifests/install.yaml`` and the README's values table are what ``make generate`` writes; and
that the rendered objects are accepted by kube-apiserver, with the permissions they claim.
Only the last test needs the control plane.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_triage.ingest.metrics import Metrics
from falco_triage.remediation.permissions import ACTION_PERMISSIONS
from falco_triage.settings import PROTECTED_NAMESPACES, IngestSettings, Settings
from tests.support import tools
from tests.support.controlplane import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = tools.CHART_DIR
NAMESPACE = "falco-triage"

# Every optional feature on: what a full install renders.
ALL_FEATURES = (
    "actions.labelPod.enabled=true",
    "actions.annotatePod.enabled=true",
    "actions.isolatePod.enabled=true",
    "actions.deletePod.enabled=true",
    "actions.scaleWorkload.enabled=true",
    "actions.notify.enabled=true",
    "actions.notify.secretNames={slack-webhook,teams-webhook}",
    "operator.peering.enabled=true",
    "receiver.networkPolicy.enabled=true",
    "receiver.tls.enabled=true",
    "receiver.tls.existingSecret=receiver-tls",
    "llm.enabled=true",
    "llm.apiKey=not-a-real-key",
    "serviceMonitor.enabled=true",
    "grafanaDashboard.enabled=true",
    "examplePolicies.enabled=true",
)
ACTIONS = ("labelPod", "annotatePod", "isolatePod", "deletePod", "scaleWorkload", "notify")
NO_ACTIONS = tuple(f"actions.{name}.enabled=false" for name in ACTIONS)

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)


def _perms(group: str, resources: Sequence[str], verbs: Sequence[str]) -> set[Perm]:
    return {(group, resource, verb) for resource in resources for verb in verbs}


# What each action must add to the operator's ClusterRole, and nothing more.
ACTION_PERMS: dict[str, set[Perm]] = {
    "labelPod": _perms("", ["pods"], ["get", "list", "watch", "patch"]),
    "annotatePod": _perms("", ["pods"], ["get", "list", "watch", "patch"]),
    "isolatePod": _perms(
        "networking.k8s.io",
        ["networkpolicies"],
        ["create", "get", "list", "watch", "delete", "patch"],
    )
    | _perms("", ["pods"], ["get", "patch"]),
    "deletePod": _perms("", ["pods"], ["get", "delete"])
    | _perms("apps", ["replicasets", "statefulsets", "daemonsets"], ["get"])
    | _perms("batch", ["jobs"], ["get"]),
    "scaleWorkload": _perms("", ["pods"], ["get"])
    | _perms("apps", ["replicasets", "deployments", "statefulsets"], ["get"])
    | _perms("apps", ["deployments/scale", "statefulsets/scale"], ["get", "patch", "update"]),
    "notify": set(),  # Events are in the base; Secrets only by name (see the notify tests).
}

# What the operator always holds: alerts (and their retention), policies, events, namespaces,
# and kopf's CRD watch.
BASE_PERMS: set[Perm] = (
    _perms(
        "falcotriage.io",
        ["falcoalerts", "falcoalerts/status"],
        ["get", "list", "watch", "create", "patch", "update"],
    )
    | _perms("falcotriage.io", ["falcoalerts"], ["delete"])
    | _perms(
        "falcotriage.io",
        [
            "responsepolicies",
            "responsepolicies/status",
            "clusterresponsepolicies",
            "clusterresponsepolicies/status",
        ],
        ["get", "list", "watch", "patch"],
    )
    | _perms("", ["events"], ["create", "patch"])
    | _perms("events.k8s.io", ["events"], ["create", "patch"])
    | _perms("", ["namespaces"], ["get", "list", "watch"])
    | _perms("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"])
)

RECEIVER_PERMS: set[Perm] = _perms("falcotriage.io", ["falcoalerts"], ["create", "get", "patch"])
RECEIVER_PERMS |= _perms("falcotriage.io", ["falcoalerts/status"], ["get", "patch", "update"])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    """Our helm (built on first use), or the system one with FALCO_TRIAGE_USE_SYSTEM_HELM=1."""
    try:
        return tools.helm_binary(REPO_ROOT)
    except tools.ToolError as err:
        pytest.skip(f"no helm: {err}")


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return tools.run_helm(REPO_ROOT, *args, helm=helm, check=False)


def _set_args(values: Sequence[str]) -> list[str]:
    args: list[str] = []
    for value in values:
        args += ["--set", value]
    return args


def render(
    helm: Path,
    *values: str,
    release: str = "falco-triage",
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``helm template`` → the rendered objects; fails the test on any error or warning."""
    result = _helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *_set_args(values),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"helm template warned:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def rule_perms(role: dict[str, Any]) -> set[Perm]:
    """Every (group, resource, verb) a role grants, ignoring resourceNames rules."""
    return {
        (group, resource, verb)
        for rule in role.get("rules", [])
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_perms(docs: list[dict[str, Any]]) -> set[Perm]:
    return rule_perms(find(docs, "ClusterRole", "-operator"))


def container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    deployment = find(docs, "Deployment", f"-{component}")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(ctr: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in ctr.get("env", [])}


# --------------------------------------------------------------------------------------------
# lint and render
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), ALL_FEATURES], ids=["defaults", "all-features"])
def test_helm_lint_passes_strict(helm: Path, values: tuple[str, ...]) -> None:
    """`helm lint --strict` (warnings fail) passes with defaults and with everything enabled."""
    result = _helm(
        helm, "lint", str(CHART), "--strict", "--namespace", NAMESPACE, *_set_args(values)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_the_expected_objects(helm: Path) -> None:
    """Defaults: both Deployments, their accounts and roles, settings, token, PDB; no extras."""
    docs = render(helm)
    assert kinds(docs) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} == {
        "falco-triage-operator",
        "falco-triage-receiver",
    }
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "falco-triage"
        assert labels["app.kubernetes.io/instance"] == "falco-triage"
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_all_features_render(helm: Path) -> None:
    """Everything enabled renders, including the optional objects."""
    docs = render(helm, *ALL_FEATURES)
    assert {
        "NetworkPolicy",
        "ServiceMonitor",
        "ClusterResponsePolicy",
        "Role",
        "RoleBinding",
    } <= kinds(docs)
    dashboard = find(docs, "ConfigMap", "-dashboard")
    board = json.loads(dashboard["data"]["falco-triage.json"])
    assert board["uid"] == "falco-triage"
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs
    # Every query names a receiver metric that exists, or a metric picked by a template variable.
    known = {family.name for family in Metrics().registry.collect()}
    for expr in exprs:
        used = set(re.findall(r"falco_triage_ingest_[a-z_]+", expr))
        assert used or "${" in expr, expr
        for name in used:
            assert re.sub(r"_(total|bucket)$", "", name) in known, f"{name} in {expr}"
    for policy in (d for d in docs if d["kind"] == "ClusterResponsePolicy"):
        assert policy["spec"]["mode"] == "DryRun", policy["metadata"]["name"]


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------


def test_default_rbac_grants_default_actions_only(helm: Path) -> None:
    """By default labelPod, annotatePod, isolatePod, notify: no pod deletes, no scaling."""
    perms = operator_perms(render(helm))
    expected = BASE_PERMS | ACTION_PERMS["labelPod"] | ACTION_PERMS["isolatePod"]
    assert perms == expected
    assert ("", "pods", "delete") not in perms
    assert not {p for p in perms if p[1].endswith("/scale")}


def test_no_actions_leaves_only_the_base_permissions(helm: Path) -> None:
    """With every action disabled the operator touches no pod, workload or Secret."""
    docs = render(helm, *NO_ACTIONS)
    assert operator_perms(docs) == BASE_PERMS
    assert not [d for d in docs if d["kind"] == "Role"]


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_adds_exactly_its_own_rules(helm: Path, action: str) -> None:
    """One action enabled on its own adds its declared permissions and nothing else."""
    docs = render(helm, *NO_ACTIONS, f"actions.{action}.enabled=true")
    assert operator_perms(docs) == BASE_PERMS | ACTION_PERMS[action]


@pytest.mark.parametrize("action", ACTIONS)
def test_chart_grants_what_the_code_declares_for_each_action(helm: Path, action: str) -> None:
    """The chart's rules for an action cover every permission its code declares
    (falco_triage.remediation.permissions), so enabling an action never ends in Forbidden."""
    docs = render(helm, *NO_ACTIONS, f"actions.{action}.enabled=true")
    declared = rule_perms({"rules": ACTION_PERMISSIONS[action]})
    assert declared - operator_perms(docs) == set()


def test_notify_secrets_are_limited_by_name_to_the_release_namespace(helm: Path) -> None:
    """notify reads only the named Secrets, with a Role in the release namespace by default."""
    docs = render(helm, "actions.notify.secretNames={slack-webhook}")
    cluster_role = find(docs, "ClusterRole", "-operator")
    assert not [r for r in cluster_role["rules"] if "secrets" in r["resources"]]
    role = find(docs, "Role", "-notify")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["slack-webhook"],
            "verbs": ["get"],
        }
    ]
    binding = find(docs, "RoleBinding", "-notify")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_notify_secrets_cluster_wide_are_still_limited_by_name(helm: Path) -> None:
    docs = render(
        helm, "actions.notify.secretNames={slack-webhook}", "actions.notify.clusterWide=true"
    )
    role = find(docs, "ClusterRole", "-operator")
    rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["slack-webhook"],
            "verbs": ["get"],
        }
    ]
    assert "Role" not in kinds(docs)


def test_notify_disabled_reads_no_secret_even_with_names(helm: Path) -> None:
    docs = render(helm, "actions.notify.enabled=false", "actions.notify.secretNames={x}")
    assert "Role" not in kinds(docs)
    assert not [
        r for r in find(docs, "ClusterRole", "-operator")["rules"] if "secrets" in r["resources"]
    ]


def test_standalone_by_default(helm: Path) -> None:
    """One replica, --standalone, Recreate updates (never two acting), no peering rights."""
    docs = render(helm)
    args = container(docs, "operator")["args"]
    assert "--standalone" in args
    assert "--peering-name=falco-triage" in args
    operator = find(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert not {p for p in operator_perms(docs) if p[0] == "kopf.dev"}
    assert not {"ClusterKopfPeering", "KopfPeering"} & kinds(docs)


def test_peering_creates_its_object_and_grants_its_rights(helm: Path) -> None:
    """Peering: standby replicas, the ClusterKopfPeering kopf waits for, kopf.dev rules."""
    docs = render(helm, "operator.peering.enabled=true", "operator.replicas=2")
    args = container(docs, "operator")["args"]
    assert "--standalone" not in args
    assert "--peering-name=falco-triage" in args
    operator = find(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    peering = find(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "falco-triage"
    assert _perms(
        "kopf.dev", ["clusterkopfpeerings", "kopfpeerings"], ["get", "list", "watch", "patch"]
    ) <= operator_perms(docs)


def test_peering_per_namespace_when_sharded(helm: Path) -> None:
    """A shard serving listed namespaces peers through a KopfPeering in each (not globs)."""
    docs = render(
        helm,
        "operator.peering.enabled=true",
        "operator.peering.name=shard-a",
        "operator.namespaces={team-a,team-b,team-c-*}",
    )
    args = container(docs, "operator")["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
        "--namespace=team-c-*",
    ]
    assert "--peering-name=shard-a" in args
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in peerings} == {
        ("team-a", "shard-a"),
        ("team-b", "shard-a"),
    }
    assert "ClusterKopfPeering" not in kinds(docs)


def test_receiver_has_its_own_minimal_account(helm: Path) -> None:
    """The receiver runs as its own ServiceAccount, bound only to FalcoAlert writes."""
    docs = render(helm, *ALL_FEATURES)
    role = find(docs, "ClusterRole", "-receiver")
    assert rule_perms(role) == RECEIVER_PERMS
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    assert deployments["falco-triage-receiver"] != deployments["falco-triage-operator"]
    for suffix in ("-receiver", "-operator"):
        binding = find(docs, "ClusterRoleBinding", suffix)
        assert binding["roleRef"]["name"] == f"falco-triage{suffix}"
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": deployments[f"falco-triage{suffix}"],
                "namespace": NAMESPACE,
            }
        ]


def test_rbac_create_false_renders_no_rbac(helm: Path) -> None:
    docs = render(helm, "rbac.create=false", "serviceAccount.create=false")
    assert not kinds(docs) & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert "ServiceAccount" not in kinds(docs)


# --------------------------------------------------------------------------------------------
# Pods: settings, secrets, probes, security
# --------------------------------------------------------------------------------------------


def test_rendered_settings_file_is_accepted_by_the_settings_model(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.yaml, mounted at /etc/falco-triage and named by FALCO_TRIAGE_CONFIG, loads into
    the Settings model with the chart's values, and the receiver's env names real settings."""
    docs = render(
        helm,
        "receiver.port=8443",
        "logLevel=DEBUG",
        "receiver.tls.enabled=true",
        "receiver.tls.existingSecret=receiver-tls",
    )
    config = find(docs, "ConfigMap", "-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config)
    for ctr in (container(docs, "operator"), container(docs, "receiver")):
        env = env_of(ctr)
        assert env["FALCO_TRIAGE_CONFIG"] == "/etc/falco-triage/config.yaml"
        mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
        assert mounts["/etc/falco-triage"] == "config"
        assert mounts["/tmp"] == "tmp"

    receiver_env = env_of(container(docs, "receiver"))
    ingest_env = {k: v for k, v in receiver_env.items() if k.startswith("FALCO_TRIAGE_INGEST__")}
    assert set(ingest_env) == {
        "FALCO_TRIAGE_INGEST__TOKEN_FILE",
        "FALCO_TRIAGE_INGEST__TLS_CERT_FILE",
        "FALCO_TRIAGE_INGEST__TLS_KEY_FILE",
        "FALCO_TRIAGE_INGEST__CLIENT_CA_FILE",
    }
    for name in ingest_env:
        assert name.removeprefix("FALCO_TRIAGE_INGEST__").lower() in IngestSettings.model_fields

    for name in list(os.environ):
        if name.startswith("FALCO_TRIAGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FALCO_TRIAGE_CONFIG", str(path))
    for name, value in ingest_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.namespace == NAMESPACE
    assert settings.log_level == "DEBUG"
    assert settings.ingest.port == 8443
    assert settings.ingest.client_ca_file == Path("/var/run/secrets/falco-triage/tls/ca.crt")
    assert settings.operator.protected_namespaces == list(PROTECTED_NAMESPACES)
    assert settings.operator.peering_lifetime_seconds == 20
    assert settings.operator.retention.max_age == "7d"
    assert settings.ingest.write_workers == 4


def test_token_secret_is_mounted_as_a_file(helm: Path) -> None:
    """The bearer token reaches the receiver as a file from a Secret, never as an env value."""
    docs = render(helm)
    secret = find(docs, "Secret", "-receiver-token")
    assert set(secret["data"]) == {"token"}
    ctr = container(docs, "receiver")
    token_file = env_of(ctr)["FALCO_TRIAGE_INGEST__TOKEN_FILE"]
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "token")
    assert token_file == f"{mount['mountPath']}/token"
    volumes = find(docs, "Deployment", "-receiver")["spec"]["template"]["spec"]["volumes"]
    token_volume = next(v for v in volumes if v["name"] == "token")
    assert token_volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert "FALCO_TRIAGE_INGEST__TOKEN" not in env_of(ctr)
    assert "FALCO_TRIAGE_INGEST__TOKEN_FILE" not in env_of(container(docs, "operator"))


def test_existing_token_secret_is_used_and_not_created(helm: Path) -> None:
    docs = render(helm, "receiver.auth.existingSecret=my-token")
    assert "Secret" not in kinds(docs)
    volumes = find(docs, "Deployment", "-receiver")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "token")["secret"]["secretName"] == "my-token"


def test_given_token_is_stored_and_auth_disabled_mounts_none(helm: Path) -> None:
    token = "0123456789abcdef-given"
    docs = render(helm, f"receiver.auth.token={token}")
    stored = find(docs, "Secret", "-receiver-token")["data"]["token"]
    assert base64.b64decode(stored).decode() == token
    docs = render(helm, "receiver.auth.disabled=true")
    assert "Secret" not in kinds(docs)
    assert "FALCO_TRIAGE_INGEST__TOKEN_FILE" not in env_of(container(docs, "receiver"))


def test_probes(helm: Path) -> None:
    """Operator: kopf liveness on the --liveness port. Receiver: /readyz and /healthz on http,
    over HTTPS with TLS (client certificates are optional at the TLS layer, so also with mTLS)."""
    docs = render(helm)
    operator = container(docs, "operator")
    assert "--liveness=http://0.0.0.0:8081/healthz" in operator["args"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in operator["ports"]

    receiver = container(docs, "receiver")
    assert receiver["args"] == ["ingest"]
    assert receiver["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert receiver["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    service = find(docs, "Service", "-receiver")
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    tls = ("receiver.tls.enabled=true", "receiver.tls.existingSecret=tls")
    receiver = container(render(helm, *tls, "receiver.tls.clientAuth=false"), "receiver")
    assert receiver["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "FALCO_TRIAGE_INGEST__CLIENT_CA_FILE" not in env_of(receiver)
    receiver = container(render(helm, *tls), "receiver")
    assert receiver["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert env_of(receiver)["FALCO_TRIAGE_INGEST__CLIENT_CA_FILE"].endswith("/ca.crt")


def test_receiver_grace_period_covers_the_shutdown_flush(helm: Path) -> None:
    """The kubelet waits longer than the receiver keeps flushing its buffer after SIGTERM."""
    docs = render(helm, extra=["--set-json", "receiver.shutdownFlushSeconds=45.5"])
    pod = find(docs, "Deployment", "-receiver")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 56
    config = yaml.safe_load(find(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    assert config["ingest"]["shutdown_flush_seconds"] == 45.5


def test_pods_are_locked_down(helm: Path) -> None:
    """Non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, resources."""
    docs = render(helm, *ALL_FEATURES)
    for component in ("operator", "receiver"):
        pod = find(docs, "Deployment", f"-{component}")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctr = container(docs, component)
        sc = ctr["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert ctr["resources"]["requests"]
        assert ctr["resources"]["limits"]
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440


def test_image_user_matches_the_chart(helm: Path) -> None:
    """The Dockerfile's pinned base and user 65532 are what the chart's pods run as."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    assert re.search(r"^USER 65532:65532$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["falco-triage"]' in dockerfile
    pod = find(render(helm), "Deployment", "-receiver")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532


def test_network_policy_admits_only_falco_pods(helm: Path) -> None:
    docs = render(helm, "receiver.networkPolicy.enabled=true")
    policy = find(docs, "NetworkPolicy", "-receiver")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "falco"}}
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["falco", "falcosidekick"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "operator.replicas=-1"], "/operator/replicas"),
        (["--set", "operator.replicas=2"], "/operator/peering/enabled"),
        (["--set", "receiver.auth.token=short"], "/receiver/auth/token"),
        (["--set", "operator.retention.maxAge=forever"], "/operator/retention/maxAge"),
        (["--set-string", "actions.isolatePod.enabled=yes"], "/actions/isolatePod/enabled"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "receiver.tlss.enabled=true"], "tlss"),
        (["--set", "logLevel=LOUD"], "/logLevel"),
        (["--set", "receiver.port=70000"], "/receiver/port"),
        (["--set", "receiver.limits.maxOutputChars=100"], "/receiver/limits/maxOutputChars"),
        (["--set", "receiver.service.type=Magic"], "/receiver/service/type"),
        (["--set", "receiver.tls.enabled=true"], "/receiver/tls/existingSecret"),
    ],
    ids=lambda v: v if isinstance(v, str) else v[-1],
)
def test_schema_rejects_bad_values_by_name(helm: Path, args: list[str], named: str) -> None:
    """A bad value fails `helm template` with a message naming that value."""
    result = _helm(helm, "template", "falco-triage", str(CHART), *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


def test_every_value_is_documented() -> None:
    """Each value has a `# --` comment (on itself or an enclosing key), and the schema knows it."""
    assert tools.undocumented_values(REPO_ROOT / CHART) == []
    schema = json.loads((REPO_ROOT / CHART / "values.schema.json").read_text())
    values = yaml.safe_load((REPO_ROOT / CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}{key} is not in values.schema.json"
                walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


# --------------------------------------------------------------------------------------------
# Generated files and NOTES
# --------------------------------------------------------------------------------------------


def test_install_manifest_matches_a_fresh_render(helm: Path) -> None:
    """manifests/install.yaml is exactly what `make generate` renders now (no drift)."""
    committed = (REPO_ROOT / tools.INSTALL_MANIFEST).read_text(encoding="utf-8")
    assert committed == tools.render_manifests(REPO_ROOT), (
        "manifests/install.yaml is out of date: run `make generate`"
    )
    docs = [d for d in yaml.safe_load_all(committed) if d]
    assert docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "falco-triage"}},
    }
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    chart_crds = {
        yaml.safe_load(path.read_text())["metadata"]["name"]
        for path in (REPO_ROOT / CHART / "crds").glob("*.yaml")
    }
    assert crds == chart_crds
    assert "falcoalerts.falcotriage.io" in crds
    # No credential in Git: the token Secret is the user's.
    assert "Secret" not in {d["kind"] for d in docs}
    kustomization = yaml.safe_load((REPO_ROOT / "manifests/kustomization.yaml").read_text())
    assert kustomization["resources"] == ["install.yaml"]


def test_chart_readme_values_table_is_current() -> None:
    readme = (REPO_ROOT / CHART / "README.md").read_text(encoding="utf-8")
    assert readme == tools.render_chart_readme(REPO_ROOT), (
        "charts/falco-triage/README.md's values table is out of date: run `make generate`"
    )
    assert "| `actions.deletePod.enabled` | bool | `false` |" in readme


def test_kind_up_script_parses() -> None:
    """hack/kind-up.sh needs Docker, so it is not run here; it must at least be valid bash."""
    result = subprocess.run(
        ["bash", "-n", str(REPO_ROOT / "hack" / "kind-up.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# On a real API server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def release(control_plane: Cluster, namespace: str) -> Iterator[str]:
    """A unique release name; its cluster-scoped objects are deleted afterwards."""
    name = f"ft-{uuid.uuid4().hex[:8]}"
    yield name
    control_plane.kubectl(
        "delete",
        "clusterrole,clusterrolebinding,clusterkopfpeering",
        "-l",
        f"app.kubernetes.io/instance={name}",
        "--ignore-not-found",
        "--wait=false",
    )


def _can_i(cluster: Cluster, namespace: str, account: str, *what: str) -> bool:
    result = cluster.kubectl(
        "auth",
        "can-i",
        *what,
        f"--as=system:serviceaccount:{namespace}:{account}",
        "-n",
        namespace,
        check=False,
    )
    return result.stdout.strip() == "yes"


def test_rendered_chart_is_accepted_by_the_api_server(
    helm: Path, control_plane: Cluster, namespace: str, release: str
) -> None:
    """The chart rendered for a fresh namespace applies cleanly (server-side) to the real
    control plane, and the ServiceAccounts end up with the rights the chart claims."""
    docs = render(
        helm,
        *[v for v in ALL_FEATURES if not v.startswith(("serviceMonitor.", "examplePolicies."))],
        "actions.deletePod.enabled=false",
        release=release,
        namespace=namespace,
    )
    assert "Namespace" not in kinds(docs)
    assert "CustomResourceDefinition" not in kinds(docs)
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=falco-triage-tests",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs, sort_keys=False),
    )
    applied = control_plane.kubectl(
        "get",
        "deployments,services,configmaps,secrets,serviceaccounts,pdb,networkpolicies",
        "-n",
        namespace,
        "-o",
        "name",
    ).stdout.split()
    assert f"deployment.apps/{release}-falco-triage-operator" in applied
    assert f"deployment.apps/{release}-falco-triage-receiver" in applied
    assert f"networkpolicy.networking.k8s.io/{release}-falco-triage-receiver" in applied

    assert (
        control_plane.kubectl(
            "get", "clusterkopfpeering", f"{release}-falco-triage", "-o", "name", check=False
        ).stdout.strip()
        == f"clusterkopfpeering.kopf.dev/{release}-falco-triage"
    )

    operator = f"{release}-falco-triage-operator"
    receiver = f"{release}-falco-triage-receiver"
    alerts = "falcoalerts.falcotriage.io"
    expected: list[tuple[str, bool, tuple[str, ...]]] = [
        (operator, True, ("patch", alerts, "--subresource=status", "-A")),
        (operator, True, ("delete", alerts, "-A")),  # retention
        (operator, True, ("watch", "clusterresponsepolicies.falcotriage.io")),
        (operator, True, ("create", "networkpolicies.networking.k8s.io", "-A")),
        (operator, True, ("patch", "deployments.apps", "--subresource=scale", "-A")),
        (operator, False, ("patch", "deployments.apps", "-A")),  # only through /scale
        (operator, True, ("patch", "clusterkopfpeerings.kopf.dev")),
        (operator, True, ("get", "secrets/slack-webhook")),
        (operator, False, ("get", "secrets/other")),
        (operator, False, ("list", "secrets")),
        (operator, False, ("delete", "pods", "-A")),  # deletePod is disabled here
        (receiver, True, ("create", alerts, "-A")),
        (receiver, True, ("update", alerts, "--subresource=status", "-A")),
        (receiver, False, ("list", alerts, "-A")),
        (receiver, False, ("delete", alerts, "-A")),
        (receiver, False, ("get", "pods", "-A")),
        (receiver, False, ("get", "secrets")),
    ]
    wrong = [
        f"{account} {'can' if allowed else 'cannot'} {' '.join(what)}"
        for account, allowed, what in expected
        if _can_i(control_plane, namespace, account, *what) is not allowed
    ]
    assert wrong == [], "should be:\n" + "\n".join(wrong)


def test_example_policies_are_valid_for_the_crds(
    helm: Path, control_plane: Cluster, namespace: str, release: str
) -> None:
    """The example ClusterResponsePolicies pass the CRDs' schema and CEL rules. Server-side dry
    run: real policies would be acted on by operators other tests run."""
    docs = render(helm, "examplePolicies.enabled=true", release=release, namespace=namespace)
    policies = [d for d in docs if d["kind"] == "ClusterResponsePolicy"]
    assert len(policies) == 3
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=falco-triage-tests",
        "-f",
        "-",
        input=yaml.safe_dump_all(policies, sort_keys=False),
    )


def _notes(helm: Path, cluster: Cluster, namespace: str, *values: str) -> str:
    # NB: helm v3's `install --dry-run=client` still checks that the cluster is reachable, so
    # NOTES (which `helm template` never renders) need an API server; nothing is installed.
    result = _helm(
        helm,
        "install",
        "falco-triage",
        str(CHART),
        "--namespace",
        namespace,
        "--dry-run=client",
        f"--kubeconfig={cluster.kubeconfig}",
        *_set_args(values),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_tell_falco_and_falcosidekick_where_to_post(
    helm: Path, control_plane: Cluster, namespace: str
) -> None:
    """NOTES: the receiver's URL for Falcosidekick's webhook (with the bearer header, and how
    to read the token) and for Falco's http_output (JSON, mTLS), and the first command to run."""
    notes = _notes(helm, control_plane, namespace)
    url = f"http://falco-triage-receiver.{namespace}.svc.cluster.local:8080/v1/events"
    assert f'address: "{url}"' in notes
    assert 'customHeaders: "Authorization: Bearer <TOKEN>"' in notes
    assert "get secret falco-triage-receiver-token -o jsonpath='{.data.token}'" in notes
    assert "json_output: true" in notes
    assert "http_output:" in notes
    assert f'url: "{url}"' in notes
    assert "cannot send an Authorization header" in notes
    assert "kubectl get falcoalerts -A" in notes

    notes = _notes(
        helm,
        control_plane,
        namespace,
        "receiver.tls.enabled=true",
        "receiver.tls.existingSecret=receiver-tls",
    )
    assert f'url: "https://falco-triage-receiver.{namespace}.svc.cluster.local:8080/v1/events"' in (
        notes
    )
    assert "mtls: true" in notes
    assert "client_cert: /etc/falco/certs/client/client.crt" in notes
    assert "cannot send an Authorization header" not in notes


def test_llm_values_turn_the_narrative_on_in_the_settings(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llm.enabled with llm.settings renders an llm section the operator accepts and enables,
    with the API key only as a mounted file, never in the ConfigMap."""
    docs = render(
        helm,
        "llm.enabled=true",
        "llm.apiKey=not-a-real-key",
        "llm.settings.url=http://ollama.llm:11434/v1",
        "llm.settings.model=llama3.1",
    )
    config = find(docs, "ConfigMap", "-config")["data"]["config.yaml"]
    assert "not-a-real-key" not in config
    path = tmp_path / "config.yaml"
    path.write_text(config)
    for name in list(os.environ):
        if name.startswith("FALCO_TRIAGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FALCO_TRIAGE_CONFIG", str(path))
    settings = Settings()
    assert settings.llm.enabled is True
    assert settings.llm.model == "llama3.1"
    env = env_of(container(docs, "operator"))
    assert env["FALCO_TRIAGE_LLM__API_KEY_FILE"].startswith("/var/run/secrets/falco-triage/llm/")
