"""CustomResourceDefinitions generated from the pydantic models.

Kubernetes wants *structural* schemas: every ``$ref`` inlined, ``nullable`` instead of
``anyOf`` with null, no ``title``, no ``additionalProperties: false`` beside ``properties``.
``make generate`` writes the result to ``crds/`` and the chart; a test fails on drift.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from falco_triage.models.alert import FalcoAlertSpec, FalcoAlertStatus
from falco_triage.models.common import GROUP, VERSION
from falco_triage.models.policy import ClusterResponsePolicySpec, PolicyStatus, ResponsePolicySpec

Schema = dict[str, Any]
_DROP = {"title", "$defs"}


def structural(model: type[BaseModel]) -> Schema:
    """The model's JSON schema rewritten as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    defs: Schema = raw.get("$defs", {})
    result: Schema = _rewrite(raw, defs)
    return result


def _rewrite(node: Any, defs: Schema) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _rewrite(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"CRD schemas cannot express a union of {options}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_rewrite(options[0], defs), **_rewrite(rest, defs)}
        if len(options) < len(node["anyOf"]):
            merged["nullable"] = True
        return merged
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            out[key] = {name: _rewrite(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _rewrite(value, defs)
    return out


def _object_schema(spec: type[BaseModel], status: type[BaseModel]) -> Schema:
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    scope: str,
    short_names: list[str],
    categories: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[Schema],
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _object_schema(spec, status)},
                }
            ],
        },
    }


def _age() -> Schema:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def falcoalert_crd() -> Schema:
    return _crd(
        kind="FalcoAlert",
        plural="falcoalerts",
        scope="Namespaced",
        short_names=["fa"],
        categories=["falco", "security"],
        spec=FalcoAlertSpec,
        status=FalcoAlertStatus,
        columns=[
            {"name": "Rule", "type": "string", "jsonPath": ".spec.rule"},
            {"name": "Priority", "type": "string", "jsonPath": ".spec.priority"},
            {"name": "Target", "type": "string", "jsonPath": ".spec.target.display"},
            {"name": "Count", "type": "integer", "jsonPath": ".status.occurrences.count"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Action", "type": "string", "jsonPath": ".status.decision.summary"},
            _age(),
        ],
    )


def _policy_columns() -> list[Schema]:
    return [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {
            "name": "Valid",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
        },
        {"name": "Matched", "type": "integer", "jsonPath": ".status.matchedAlerts"},
        {"name": "Actions", "type": "integer", "jsonPath": ".status.actionsTaken"},
        _age(),
    ]


def responsepolicy_crd() -> Schema:
    return _crd(
        kind="ResponsePolicy",
        plural="responsepolicies",
        scope="Namespaced",
        short_names=["frp"],
        categories=["falco", "security"],
        spec=ResponsePolicySpec,
        status=PolicyStatus,
        columns=_policy_columns(),
    )


def clusterresponsepolicy_crd() -> Schema:
    return _crd(
        kind="ClusterResponsePolicy",
        plural="clusterresponsepolicies",
        scope="Cluster",
        short_names=["fcrp"],
        categories=["falco", "security"],
        spec=ClusterResponsePolicySpec,
        status=PolicyStatus,
        columns=_policy_columns(),
    )


PEERING_GROUP = "kopf.dev"


def kopf_peering_crd(scope: str) -> Schema:
    """kopf's peering resource, which lets operator replicas elect one active instance.

    Its status is kopf's own map of operator identities to their priority and lifetime: truly
    free-form, the one place ``x-kubernetes-preserve-unknown-fields`` is right.
    """
    kind = "ClusterKopfPeering" if scope == "Cluster" else "KopfPeering"
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{PEERING_GROUP}"},
        "spec": {
            "group": PEERING_GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, Schema]:
    """File name → CRD, in a stable order."""
    return {
        "falcoalerts.yaml": falcoalert_crd(),
        "responsepolicies.yaml": responsepolicy_crd(),
        "clusterresponsepolicies.yaml": clusterresponsepolicy_crd(),
        "clusterkopfpeerings.yaml": kopf_peering_crd("Cluster"),
        "kopfpeerings.yaml": kopf_peering_crd("Namespaced"),
    }
