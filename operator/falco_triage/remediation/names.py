"""Deterministic names and the labels that mark objects as ours.

Everything the operator creates carries ``app.kubernetes.io/managed-by: falco-triage`` and
``falcotriage.io/alert: <alert name>``, and has a name derived only from the alert's namespace
and name, so a re-run (another replica, a retry after a crash) finds the same object.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from falco_triage.models.common import API_VERSION
from falco_triage.models.policy import ISOLATION_LABEL_PREFIX

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "falco-triage"
ALERT_LABEL = "falcotriage.io/alert"
POD_ANNOTATION = "falcotriage.io/pod"
POLICY_ANNOTATION = "falcotriage.io/policy"
NETWORK_POLICY_PREFIX = "falco-triage-isolate-"
# Shown instead of the FalcoAlert's uid when planning offline (`policy check`); never sent.
UNKNOWN_UID = "<uid of the FalcoAlert>"

_HASH_CHARS = 10  # 40 bits: collisions are negligible among the alerts of one namespace
_LABEL_VALUE_MAX = 63
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def alert_hash(namespace: str, alert_name: str) -> str:
    """Short stable hash of the alert's identity (namespace and name)."""
    digest = hashlib.sha256(f"{namespace}/{alert_name}".encode()).hexdigest()
    return digest[:_HASH_CHARS]


def network_policy_name(namespace: str, alert_name: str) -> str:
    return NETWORK_POLICY_PREFIX + alert_hash(namespace, alert_name)


def isolation_label(namespace: str, alert_name: str) -> tuple[str, str]:
    """The pod label the isolating NetworkPolicy selects: ``falcotriage.io/isolated-<hash>``.

    NB: pods have no label holding their name, and the labels they do have (``app=web``) are
    shared with their replicas, so the NetworkPolicy cannot select "this pod" directly. The
    same action therefore first puts a label unique to the alert on the pod and selects on
    it. The hash is in the *key* (not the value) so that two alerts isolating the same pod
    each keep their own label and their own NetworkPolicy, and rolling one back never lifts
    the other.
    """
    return ISOLATION_LABEL_PREFIX + alert_hash(namespace, alert_name), "true"


def label_value(text: str) -> str:
    """``text`` as a valid label value (alert names are, unless someone made a long one)."""
    cleaned = _NOT_LABEL_CHARS.sub("-", text)
    if len(cleaned) > _LABEL_VALUE_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]
        cleaned = cleaned[: _LABEL_VALUE_MAX - _HASH_CHARS - 1] + "-" + digest
    return cleaned.strip("-_.")


def managed_labels(alert_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, ALERT_LABEL: label_value(alert_name)}


def owner_reference(alert_name: str, alert_uid: str | None) -> dict[str, Any]:
    """An ownerReference to the FalcoAlert, so deleting the alert garbage-collects the object.

    ``controller`` and ``blockOwnerDeletion`` are false: the alert does not *control* the
    object (nothing reconciles it back), and deleting an alert must never wait on it.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": "FalcoAlert",
        "name": alert_name,
        "uid": alert_uid or UNKNOWN_UID,
        "controller": False,
        "blockOwnerDeletion": False,
    }


def is_ours(obj: Mapping[str, Any], alert_name: str, alert_uid: str | None = None) -> bool:
    """Whether an object found under our deterministic name was made for this alert.

    Checked after a 409 on create: a same-named object that is not ours (or belongs to an
    earlier alert of the same name that is still being garbage-collected) must not be
    adopted; the adapter reports a conflict and retries later.
    """
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    if labels.get(ALERT_LABEL) != label_value(alert_name):
        return False
    if alert_uid is None:
        return True
    owners = metadata.get("ownerReferences") or []
    return any(o.get("kind") == "FalcoAlert" and o.get("uid") == alert_uid for o in owners)
