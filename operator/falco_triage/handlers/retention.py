"""A background sweep that deletes expired FalcoAlerts and trims namespaces over their cap."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from falco_triage.handlers.state import current_settings
from falco_triage.k8s.client import api_client
from falco_triage.k8s.errors import ApiError
from falco_triage.k8s.sweep import delete_alert, list_alert_summaries
from falco_triage.policy.duration import parse_duration
from falco_triage.retention import select_for_deletion

log = logging.getLogger(__name__)


def sweep_once() -> int:
    """One pass; returns how many alerts were deleted. Blocking: runs in a worker thread."""
    settings = current_settings().operator.retention
    api = api_client()
    alerts = list(list_alert_summaries(api))
    chosen = select_for_deletion(
        alerts,
        datetime.now(UTC),
        parse_duration(settings.max_age),
        settings.max_per_namespace,
    )
    deleted = 0
    for alert, reason in chosen:
        if delete_alert(api, alert):
            deleted += 1
            log.info("Deleted FalcoAlert %s/%s: %s", alert.namespace, alert.name, reason)
    if chosen:
        log.info("Retention: %d of %d alerts deleted", deleted, len(alerts))
    return deleted


async def _loop(interval: float) -> None:
    while True:
        try:
            await asyncio.to_thread(sweep_once)
        except ApiError as exc:
            log.warning("Retention sweep failed, retrying in %.0fs: %s", interval, exc.message)
        await asyncio.sleep(interval)


@kopf.on.startup()
async def start_retention(memo: kopf.Memo, **_: Any) -> None:
    interval = current_settings().operator.retention.sweep_interval_seconds
    memo["retention_task"] = asyncio.create_task(_loop(interval), name="retention-sweep")


@kopf.on.cleanup()
async def stop_retention(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("retention_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
