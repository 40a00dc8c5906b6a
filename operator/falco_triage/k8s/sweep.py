"""Listing FalcoAlerts (for retention and rate limits) and deleting the chosen ones safely."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client

from falco_triage.k8s.errors import Conflict, NotFound, translated
from falco_triage.models.common import GROUP, VERSION
from falco_triage.retention import AlertSummary

PLURAL = "falcoalerts"
# One page stays small for the API server even with tens of thousands of alerts.
PAGE_SIZE = 500


def list_alert_summaries(api: client.ApiClient) -> Iterator[AlertSummary]:
    """Every FalcoAlert in the cluster, page by page, reduced to what retention needs."""
    for item in list_alerts(api):
        yield _summary(item)


def list_alerts(api: client.ApiClient) -> Iterator[dict[str, Any]]:
    """Every FalcoAlert in the cluster, page by page."""
    objects = client.CustomObjectsApi(api)
    token: str | None = None
    while True:
        with translated():
            page = cast(
                dict[str, Any],
                objects.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, limit=PAGE_SIZE, _continue=token, _request_timeout=60
                ),
            )
        yield from page.get("items", [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def delete_alert(api: client.ApiClient, alert: AlertSummary) -> bool:
    """Delete unless it changed since it was listed (a new occurrence); True if deleted."""
    objects = client.CustomObjectsApi(api)
    body = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(
            uid=alert.uid, resource_version=alert.resource_version
        ),
        propagation_policy="Background",
    )
    try:
        with translated(write=True):
            objects.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                alert.namespace,
                PLURAL,
                alert.name,
                body=body,
                _request_timeout=30,
            )
    except (NotFound, Conflict):
        return False
    return True


def _summary(item: dict[str, Any]) -> AlertSummary:
    meta = item["metadata"]
    status = item.get("status") or {}
    seen = (status.get("occurrences") or {}).get("lastSeen") or meta["creationTimestamp"]
    return AlertSummary(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        resource_version=meta["resourceVersion"],
        last_seen=_parse_time(seen),
        phase=status.get("phase") or "Received",
    )


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
