"""Respond to FalcoAlerts as the policies say: decide, then record, wait for approval, or act.

Triggers (all on FalcoAlerts):

- creation and operator start (``create``/``resume``, registered after the analysis handler,
  so kopf runs them in that order): decide once, then act by mode. A response interrupted by
  a crash is picked up here: kopf has not recorded the create handler as done.
- the ``falcotriage.io/approve`` annotation (``on.field``): a RequireApproval alert runs the
  actions copied into its decision.
- a timer, only on alerts with ``status.remediation.expiresAt`` and something applied: rolls
  back once the policy's ttl has passed.
- deletion, only of alerts with applied reversible actions (labels, annotations, isolation
  label, scale): rolls them back before the alert goes. kopf keeps its finalizer exactly on
  those alerts, because the handler's ``when`` filter selects them; every other alert is
  deleted without waiting. NetworkPolicies are also owned by the alert, so the garbage
  collector removes them even if rollback could not run.

Each handler parses kwargs into :class:`~falco_triage.handlers.responder.Inputs` and calls
one :class:`~falco_triage.handlers.responder.Responder` method under a per-alert lock (the
timer runs concurrently with the change handlers of the same object).

Rate limits count the ``Matched`` decisions in :data:`~falco_triage.handlers.decisions.MATCHED`
(read from every alert's ``status.decision`` at start, then kept current from the watch) plus
this process's own decisions not yet seen there. Limitation: an alert deleted (by retention or
by hand) no longer counts, and each shard of a namespace-sharded operator counts only its own
namespaces.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import kopf

from falco_triage.handlers.decisions import MATCHED
from falco_triage.handlers.policies import policies_for
from falco_triage.handlers.responder import (
    APPROVE_ANNOTATION,
    MAX_ATTEMPTS,
    SETTLED_PHASES,
    Inputs,
    RateLog,
    Responder,
    Retry,
    approval_of,
    rollback_pending,
    ttl_due,
    ttl_pending,
)
from falco_triage.handlers.state import NamespaceIndex, current_settings
from falco_triage.k8s.client import api_client
from falco_triage.k8s.errors import ApiError, NotFound
from falco_triage.k8s.remediation import Remediator, read_alert
from falco_triage.models.alert import PLURAL, Phase
from falco_triage.models.common import GROUP, VERSION

log = logging.getLogger(__name__)

NAMESPACE_INDEX = "namespace_labels_index"
# How often each alert with a ttl checks whether it is due; rollback happens at most this
# long after expiresAt.
TTL_CHECK_INTERVAL = 5.0

_rate = RateLog()
_responder: Responder | None = None
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def responder() -> Responder:
    global _responder
    if _responder is None:
        _responder = Responder(Remediator(api_client()), current_settings(), _rate)
    return _responder


@asynccontextmanager
async def _locked(uid: str) -> AsyncIterator[None]:
    lock = _locks.get(uid)
    if lock is None:
        lock = asyncio.Lock()
        _locks[uid] = lock
    async with lock:
        yield


def _inputs(namespace: str | None, kwargs: Mapping[str, Any]) -> Inputs:
    parsed = policies_for(namespace, kwargs)
    labels: Mapping[str, str] | None = None
    if namespace:
        index: NamespaceIndex = kwargs[NAMESPACE_INDEX]
        labels = next(iter(index.get(namespace, [])), None)
    return Inputs(
        policies=[p.policy for p in parsed if p.policy is not None],
        namespace_labels=labels,
        decisions=MATCHED,
    )


def _target_namespace(spec: Mapping[str, Any]) -> str | None:
    target = spec.get("target") or {}
    namespace = target.get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def _nothing_to_do(body: kopf.Body) -> bool:
    """Settled alerts (most of them, on every operator start) cost no API call."""
    status = body.status
    if not status.get("decision"):
        return False
    phase = status.get("phase")
    if phase in SETTLED_PHASES:
        return True
    return phase == Phase.PENDING_APPROVAL.value and not approval_of(body.metadata).requested


async def _respond(body: kopf.Body, retry: int, kwargs: Mapping[str, Any]) -> None:
    namespace, name = body.metadata.namespace, body.metadata.name
    assert namespace is not None
    assert name is not None
    inputs = _inputs(_target_namespace(body.spec), kwargs)
    async with _locked(str(body.metadata.uid)):
        try:
            await responder().respond(namespace, name, inputs, retry)
        except Retry as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
        except NotFound:
            return  # deleted meanwhile


def _unsettled(body: kopf.Body, **_: Any) -> bool:
    return not _nothing_to_do(body)


# NB: filtered on resume so that settled alerts cost nothing at start-up (see analysis.py).
@kopf.on.resume(GROUP, VERSION, PLURAL, when=_unsettled)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def respond(body: kopf.Body, retry: int, **kwargs: Any) -> None:
    if _nothing_to_do(body):
        return
    await _respond(body, retry, kwargs)


# NB: a tuple path, because the annotation key itself contains dots.
@kopf.on.field(GROUP, VERSION, PLURAL, field=("metadata", "annotations", APPROVE_ANNOTATION))
async def on_approval(body: kopf.Body, new: Any, retry: int, **kwargs: Any) -> None:
    if new != "true":
        return
    await _respond(body, retry, kwargs)


def _ttl_pending(status: kopf.Status, **_: Any) -> bool:
    return ttl_pending(status)


def _rollback_pending(status: kopf.Status, **_: Any) -> bool:
    return rollback_pending(status)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TTL_CHECK_INTERVAL, when=_ttl_pending)
async def expire(body: kopf.Body, **_: Any) -> None:
    """Roll back when the policy's ttl has passed."""
    if not ttl_due(body.status, datetime.now(UTC)):
        return
    namespace, name = body.metadata.namespace, body.metadata.name
    assert namespace is not None
    assert name is not None
    worker = responder()
    async with _locked(str(body.metadata.uid)):
        try:
            alert = await asyncio.to_thread(read_alert, worker.rest, namespace, name)
            if alert is None or not ttl_due(alert.get("status") or {}, datetime.now(UTC)):
                return  # rolled back meanwhile (or deleted)
            await worker.rollback(alert, "ttl expired")
        except (ApiError, Retry) as exc:
            # The next tick tries again; the records say what is still applied.
            log.warning("TTL rollback of FalcoAlert %s/%s failed: %s", namespace, name, exc)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_rollback_pending)
async def roll_back_on_delete(body: kopf.Body, retry: int, **_: Any) -> None:
    """Undo applied actions before a deleted alert goes (only alerts that have some)."""
    namespace, name = body.metadata.namespace, body.metadata.name
    assert namespace is not None
    assert name is not None
    worker = responder()
    async with _locked(str(body.metadata.uid)):
        try:
            alert = await asyncio.to_thread(read_alert, worker.rest, namespace, name)
            if alert is None or not rollback_pending(alert.get("status") or {}):
                return
            done = await worker.rollback(alert, "the alert was deleted")
            problem = None if done else "some actions could not be rolled back"
        except (ApiError, Retry) as exc:
            problem = str(exc)
    if problem is None:
        return
    if retry + 1 < MAX_ATTEMPTS:
        raise kopf.TemporaryError(f"rollback: {problem}", delay=5)
    # NB: never block a deletion forever; the records and Events say what is left.
    log.error(
        "FalcoAlert %s/%s deleted with actions not rolled back after %d attempts: %s",
        namespace,
        name,
        MAX_ATTEMPTS,
        problem,
    )
