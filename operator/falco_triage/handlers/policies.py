"""Response policies: validate each one, publish a Valid condition, keep them indexed in memory.

An invalid policy gets ``Valid=False`` with the reasons and takes no part in decisions; it never
stops the operator or the other policies. The index is what the response handler decides from,
so a decision never lists policies from the API server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from falco_triage.handlers.state import current_settings
from falco_triage.k8s.client import api_client
from falco_triage.k8s.errors import ApiError, NotFound
from falco_triage.k8s.rest import RestClient
from falco_triage.k8s.status import update_status
from falco_triage.models.common import GROUP, VERSION, Condition, merge_conditions, now
from falco_triage.policy.validate import ParsedPolicy, parse_policy, validity_condition

NAMESPACED = "responsepolicies"
CLUSTER = "clusterresponsepolicies"
# Index keys: a namespace for ResponsePolicies, this key for ClusterResponsePolicies.
CLUSTER_KEY = "*"
NAMESPACED_INDEX = "response_policies_index"
CLUSTER_INDEX = "cluster_policies_index"

PolicyIndex = kopf.Index[str, ParsedPolicy]
Logger = logging.Logger | logging.LoggerAdapter[Any]


def _parse(body: kopf.Body) -> ParsedPolicy:
    settings = current_settings()
    protected = {*settings.operator.protected_namespaces, settings.namespace}
    return parse_policy(dict(body), protected_namespaces=protected)


@kopf.index(GROUP, VERSION, NAMESPACED)
def response_policies_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Any]:
    return {namespace or "": _parse(body)}


@kopf.index(GROUP, VERSION, CLUSTER)
def cluster_policies_index(body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {CLUSTER_KEY: _parse(body)}


def policies_for(namespace: str | None, indexes: Mapping[str, Any]) -> list[ParsedPolicy]:
    """The namespace's ResponsePolicies and every ClusterResponsePolicy, parsed."""
    namespaced: PolicyIndex = indexes[NAMESPACED_INDEX]
    cluster: PolicyIndex = indexes[CLUSTER_INDEX]
    found = list(cluster.get(CLUSTER_KEY, []))
    if namespace:
        found += list(namespaced.get(namespace, []))
    return found


def _needs_update(body: kopf.Body, parsed: ParsedPolicy) -> bool:
    status = dict(body.status)
    valid = next((c for c in status.get("conditions") or [] if c.get("type") == "Valid"), None)
    if valid is None or status.get("observedGeneration") != body.metadata.get("generation"):
        return True
    expected = "True" if parsed.valid else "False"
    return bool(valid.get("status") != expected)


def validity_status(
    stored: Mapping[str, Any], condition: Condition, generation: int | None
) -> dict[str, Any]:
    """The policy's ``Valid`` condition set among the stored ones (other writers' kept)."""
    status = stored.get("status") or {}
    return {
        "conditions": merge_conditions(status.get("conditions"), [condition]),
        "observedGeneration": generation,
    }


async def _publish(body: kopf.Body, plural: str, logger: Logger) -> None:
    if body.metadata.get("deletionTimestamp"):
        return
    parsed = _parse(body)
    if not _needs_update(body, parsed):
        return
    generation = body.metadata.get("generation")
    condition = validity_condition(parsed.errors, now=now(), generation=generation)
    change = functools.partial(validity_status, condition=condition, generation=generation)
    # NB: conditional on the version read (a merge patch replaces the conditions list whole).
    write = functools.partial(update_status, known=dict(body))
    try:
        await asyncio.to_thread(
            write,
            RestClient(api_client()),
            plural,
            body.metadata.namespace,
            body.metadata.name,
            change,
        )
    except NotFound:
        return
    except ApiError as exc:
        logger.warning("Could not record validity of %s: %s", parsed.ref, exc.message)
        return
    if parsed.valid:
        logger.info("Policy %s is valid", parsed.ref)
    else:
        logger.warning("Policy %s is invalid and ignored: %s", parsed.ref, "; ".join(parsed.errors))
        kopf.warn(body, reason="InvalidPolicy", message=condition.message)


# NB: event handlers, not change handlers: kopf's change detection ignores spec for all
# resources here (it would store FalcoAlert specs in an annotation), and validation is cheap.
@kopf.on.event(GROUP, VERSION, NAMESPACED)
async def on_response_policy(body: kopf.Body, logger: Logger, **_: Any) -> None:
    await _publish(body, NAMESPACED, logger)


@kopf.on.event(GROUP, VERSION, CLUSTER)
async def on_cluster_policy(body: kopf.Body, logger: Logger, **_: Any) -> None:
    await _publish(body, CLUSTER, logger)
