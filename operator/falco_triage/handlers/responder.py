"""The response to one FalcoAlert: decide, record, and act or wait, crash-safely; and roll back.

:mod:`falco_triage.handlers.response` holds the kopf wiring; this module holds the sequence
the handlers share. Every decision is :func:`falco_triage.policy.decide` on the alert's spec,
the policies kopf indexes, the namespace's labels and the pod's labels — nothing from
``status.analysis`` or ``status.narrative`` is ever read here. Every object and patch comes
from :func:`falco_triage.remediation.plan`; every API call goes through
:class:`falco_triage.k8s.remediation.Remediator`, in a worker thread.

Crash safety: the decision is written before anything is done; each step's
``start_record`` (result Planned, ``startedAt``, the facts rollback needs) is written before
its first operation and its ``finish_record`` after the last. A re-run (a kopf retry, another
replica, a restart after SIGKILL) re-reads the alert, skips steps already recorded with a
final result, and re-runs an interrupted step, whose operations are idempotent.

Counting: the winning policy's counters (``status.matchedAlerts``, ``status.actionsTaken``)
live on another object, so no single write can settle an alert and count it. Every count is
made *before* the phase write that settles the alert (NoAction, DryRun, PendingApproval, or the
final phase), and is idempotent per alert (:mod:`falco_triage.k8s.policy_status`): a re-run
after a crash between the two finds the alert unsettled, counts again (nothing is added) and
writes the phase.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from falco_triage.handlers import response_testhook as testhook
from falco_triage.k8s import alerts as ingest_alerts
from falco_triage.k8s.errors import ApiError, Forbidden, Transient
from falco_triage.k8s.policy_status import PolicyName, Tally, count_alert
from falco_triage.k8s.remediation import (
    AlertIdentity,
    Remediator,
    StepOutcome,
    chart_grant,
    ensure_finalizer,
    forbidden_message,
    patch_alert_status,
    permission_text,
    read_alert,
)
from falco_triage.k8s.rest import resource_for
from falco_triage.k8s.status import FIELD_MANAGER
from falco_triage.models.alert import (
    ActionRecord,
    ActionResult,
    Decision,
    DecisionOutcome,
    FalcoAlert,
    FalcoAlertSpec,
    FalcoAlertStatus,
    Phase,
    Remediation,
    TargetKind,
)
from falco_triage.models.common import GROUP, now
from falco_triage.models.policy import Mode
from falco_triage.models.text import clip
from falco_triage.policy import AnyPolicy, DecisionContext, decide
from falco_triage.remediation import PlannedStep, WorkloadState, plan, plan_rollback
from falco_triage.settings import Settings

log = logging.getLogger(__name__)

APPROVE_ANNOTATION = f"{GROUP}/approve"
# NB: the same name as kopf's finalizer (handlers/startup.py). kopf keeps it exactly on the
# alerts the on.delete handler's filter selects; adding it here first closes the window before
# kopf's next look at the alert.
FINALIZER = f"{GROUP}/finalizer"
# Actions whose effect stays on the cluster until undone; the alert keeps a finalizer while
# any of them is applied. (isolatePod's NetworkPolicy is owned by the alert and
# garbage-collected, but its label on the pod is not.)
REVERSIBLE = frozenset({"labelPod", "annotatePod", "isolatePod", "scaleWorkload"})
POD_ACTIONS = frozenset({"labelPod", "annotatePod", "isolatePod", "deletePod", "scaleWorkload"})
UNDECIDED_PHASES = frozenset({None, Phase.RECEIVED.value, Phase.ANALYZED.value})
SETTLED_PHASES = frozenset(
    {
        Phase.DRY_RUN.value,
        Phase.REMEDIATED.value,
        Phase.NO_ACTION.value,
        Phase.FAILED.value,
        Phase.ROLLED_BACK.value,
        Phase.RESOLVED.value,
    }
)
FAILURES = frozenset({ActionResult.FAILED, ActionResult.FORBIDDEN})
# Field managers the operator and the receiver write with: an approval they "made" is refused.
OPERATOR_MANAGERS = frozenset({"kopf", FIELD_MANAGER, ingest_alerts.FIELD_MANAGER})

# A step whose API calls keep failing transiently (or conflicting with an object that is not
# ours) is tried this many times, RETRY_DELAY seconds apart, then recorded as Failed.
MAX_ATTEMPTS = 5
RETRY_DELAY = 5.0
# Decisions made here are counted for rate limits until the watch has delivered them; after
# this long it certainly has (or the alert is gone).
_MADE_MEMORY = timedelta(minutes=10)
_MAX_EVENT_MESSAGE = 1024


# -- pure helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """Whether the approve annotation is set, by whom, and why it does not count (if not)."""

    requested: bool
    by: str | None = None
    problem: str | None = None

    @property
    def approved(self) -> bool:
        return self.requested and self.by is not None and self.problem is None


def approval_of(metadata: Mapping[str, Any]) -> Approval:
    """Read the approval from the annotation and the managedFields entry that set it.

    managedFields name the *field manager* (``kubectl-annotate``, ``argocd-controller``, …)
    that last set each field, not the user; the API server's audit log has the user. An
    approval set by the operator's own managers is refused: it must come from outside.
    """
    annotations = metadata.get("annotations") or {}
    if annotations.get(APPROVE_ANNOTATION) != "true":
        return Approval(requested=False)
    key = f"f:{APPROVE_ANNOTATION}"
    setters = [
        entry
        for entry in metadata.get("managedFields") or []
        if key in ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations", {})
    ]
    if not setters:
        return Approval(
            requested=True,
            problem="no managedFields entry names who set the approve annotation",
        )
    entry = max(setters, key=lambda e: str(e.get("time") or ""))
    manager = str(entry.get("manager") or "unknown")
    if manager in OPERATOR_MANAGERS:
        return Approval(
            requested=True,
            problem=f"the approve annotation was set by the operator's own field manager "
            f"{manager!r}; an approval must come from a person or their tooling",
        )
    operation = str(entry.get("operation") or "?")
    stamp = str(entry.get("time") or "?")
    return Approval(requested=True, by=clip(f"{manager} ({operation}, {stamp})", 512))


def _interrupted(record: Mapping[str, Any]) -> bool:
    return record.get("result") == ActionResult.PLANNED.value and bool(record.get("startedAt"))


def rollback_pending(status: Mapping[str, Any]) -> bool:
    """Whether any applied (or interrupted) action left something that must be undone."""
    for record in (status.get("remediation") or {}).get("actions") or []:
        if record.get("type") not in REVERSIBLE:
            continue
        if record.get("result") == ActionResult.APPLIED.value or _interrupted(record):
            return True
    return False


def expiry(status: Mapping[str, Any]) -> datetime | None:
    text = (status.get("remediation") or {}).get("expiresAt")
    return _parse_time(text) if isinstance(text, str) else None


def ttl_pending(status: Mapping[str, Any]) -> bool:
    return expiry(status) is not None and rollback_pending(status)


def ttl_due(status: Mapping[str, Any], at: datetime) -> bool:
    expires = expiry(status)
    return expires is not None and expires <= at and rollback_pending(status)


def final_phase(steps: Sequence[PlannedStep], records: Mapping[str, ActionRecord]) -> Phase:
    """Failed if a step that may not fail did; Remediated if anything was applied."""
    results = [(s, records[s.action].result) for s in steps if s.action in records]
    if any(r in FAILURES and not s.continue_on_error for s, r in results):
        return Phase.FAILED
    if any(r == ActionResult.APPLIED for _, r in results):
        return Phase.REMEDIATED
    if any(r in FAILURES for _, r in results):
        return Phase.FAILED
    return Phase.NO_ACTION


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rate limits -------------------------------------------------------------------------------


DecisionsIndex = Mapping[str, Iterable[tuple[str, str]]]


class _Recent(Mapping[str, Sequence[datetime]]):
    """Times each policy won a Matched decision: the watched ones plus our own fresh ones.

    Lazy: ``decide`` only looks up the winner, so only its entries are ever collected.
    """

    def __init__(self, index: DecisionsIndex, made: Mapping[str, Mapping[str, datetime]]) -> None:
        self._index = index
        self._made = made

    def __getitem__(self, policy: str) -> Sequence[datetime]:
        times: dict[str, datetime] = {}
        for uid, text in self._index.get(policy, ()):
            at = _parse_time(text)
            if at is not None:
                times[uid] = at
        for uid, at in self._made.get(policy, {}).items():
            times.setdefault(uid, at)
        if not times:
            raise KeyError(policy)
        return sorted(times.values())

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._index) | set(self._made))

    def __len__(self) -> int:
        return len(set(self._index) | set(self._made))


class RateLog:
    """Matched decisions per policy, for ``rateLimit``.

    The durable part is every FalcoAlert's ``status.decision`` (listed from the API server on
    every start, before any handler runs, then kept current from the watch). Decisions this
    process has made but whose status write the watch has not delivered yet are kept here, so
    two alerts decided back to back both count. Deciding is serialized by a lock, so the check
    and the record are one step.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, dict[str, datetime]] = {}

    def decide(
        self,
        index: DecisionsIndex,
        uid: str,
        decide_with: Callable[[Mapping[str, Sequence[datetime]]], Decision],
    ) -> Decision:
        """Call ``decide_with(recent)`` and record a Matched result, atomically."""
        with self._lock:
            self._forget_old(datetime.now(UTC))
            decision = decide_with(_Recent(index, self._made))
            if decision.outcome == DecisionOutcome.MATCHED and decision.policy:
                at = decision.decided_at or datetime.now(UTC)
                self._made.setdefault(decision.policy, {})[uid] = at
            return decision

    def _forget_old(self, at: datetime) -> None:
        for policy in list(self._made):
            kept = {u: t for u, t in self._made[policy].items() if at - t < _MADE_MEMORY}
            if kept:
                self._made[policy] = kept
            else:
                del self._made[policy]


# -- the response ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What kopf keeps in memory for a decision: policies, namespace labels, past decisions."""

    policies: list[AnyPolicy]
    namespace_labels: Mapping[str, str] | None
    decisions: DecisionsIndex


class Retry(Exception):
    """Try the handler again later (becomes ``kopf.TemporaryError``)."""

    def __init__(self, message: str, delay: float = RETRY_DELAY) -> None:
        super().__init__(message)
        self.delay = delay


class Responder:
    """Runs responses and rollbacks. One per operator process; safe for concurrent alerts
    (the handlers hold a per-alert lock around each call)."""

    def __init__(self, remediator: Remediator, settings: Settings, rate: RateLog) -> None:
        self.remediator = remediator
        self.rest = remediator.rest
        self.settings = settings
        self.rate = rate

    # -- entry points --------------------------------------------------------------------------

    async def respond(self, namespace: str, name: str, inputs: Inputs, retry: int) -> None:
        """Decide if not yet decided, then do what the decision and the mode say."""
        alert = await self._read(namespace, name)
        if alert is None or (alert.get("metadata") or {}).get("deletionTimestamp"):
            return
        status = alert.get("status") or {}
        decision = _decision_of(status)
        pod: dict[str, Any] | None = None
        if decision is None:
            if status.get("phase") not in UNDECIDED_PHASES:
                return  # settled before responses existed, or by hand: not ours to redo
            decision, pod = await self._decide(alert, inputs)
        await self._proceed(alert, decision, retry, pod)

    async def rollback(self, alert: dict[str, Any], why: str) -> bool:
        """Undo every applied reversible action; True when nothing is left to retry."""
        meta = alert.get("metadata") or {}
        status = alert.get("status") or {}
        spec = FalcoAlertSpec.model_validate(alert.get("spec") or {})
        remediation = Remediation.model_validate(status.get("remediation") or {})
        model = FalcoAlert(
            metadata=dict(meta), spec=spec, status=FalcoAlertStatus(remediation=remediation)
        )
        identity = AlertIdentity.of(meta)
        records = list(remediation.actions)
        target = spec.target
        pod: dict[str, Any] | None = None
        if target.pod and target.namespace:
            pod = await self._call(self.remediator.read_pod, target.namespace, target.pod)
        failed: list[str] = []
        undone = 0
        for index in reversed(range(len(records))):
            record = records[index]
            wire = record.wire()
            if record.type not in REVERSIBLE:
                continue
            if record.result != ActionResult.APPLIED and not _interrupted(wire):
                continue
            workload = None
            if record.type == "scaleWorkload" and target.namespace:
                workload = await self._call(
                    self.remediator.read_scale,
                    record.rollback.get("kind", ""),
                    target.namespace,
                    record.rollback.get("name", ""),
                )
            step = plan_rollback(record, model, pod, workload=workload)
            if step.skip_reason:
                outcome = StepOutcome(ActionResult.SKIPPED, f"nothing to undo: {step.skip_reason}")
            else:
                outcome = await self._call(self.remediator.run, step, identity)
            at = now()
            if outcome.result in (ActionResult.APPLIED, ActionResult.SKIPPED):
                undone += 1
                records[index] = record.model_copy(
                    update={
                        "result": ActionResult.ROLLED_BACK,
                        "rolled_back_at": at,
                        "message": clip(f"Rolled back ({why}): {outcome.message}", 2048),
                    }
                )
                self._event(
                    alert, "Normal", "ActionRolledBack", f"{record.name}: {outcome.message}"
                )
            else:
                failed.append(record.name)
                records[index] = record.model_copy(
                    update={"message": clip(f"Rollback failed ({why}): {outcome.message}", 2048)}
                )
                self._event(alert, "Warning", "RollbackFailed", f"{record.name}: {outcome.message}")
        patch: dict[str, Any] = {
            "remediation": {"actions": [r.wire() for r in records]},
        }
        if not failed:
            patch["remediation"]["expiresAt"] = None
            if undone:
                patch["phase"] = Phase.ROLLED_BACK.value
        await self._write(alert, patch)
        log.info(
            "Rolled back %d action(s) of FalcoAlert %s/%s (%s)%s",
            undone,
            identity.namespace,
            identity.name,
            why,
            f"; failed: {', '.join(failed)}" if failed else "",
        )
        return not failed

    # -- deciding ------------------------------------------------------------------------------

    async def _decide(
        self, alert: dict[str, Any], inputs: Inputs
    ) -> tuple[Decision, dict[str, Any] | None]:
        meta = alert.get("metadata") or {}
        spec = FalcoAlertSpec.model_validate(alert.get("spec") or {})
        target = spec.target
        pod: dict[str, Any] | None = None
        # No policy, no decision to make: do not read the pod for nothing.
        if inputs.policies and target.kind == TargetKind.POD and target.pod and target.namespace:
            try:
                pod = await self._call(self.remediator.read_pod, target.namespace, target.pod)
            except Forbidden as exc:
                log.warning("Cannot read pod labels for podSelector: %s", exc.message)
        pod_labels = dict((pod.get("metadata") or {}).get("labels") or {}) if pod else None
        at = now()

        def decide_with(recent: Mapping[str, Sequence[datetime]]) -> Decision:
            context = DecisionContext.from_settings(
                self.settings,
                now=at,
                namespace_labels=inputs.namespace_labels,
                pod_labels=pod_labels,
                recent_responses=recent,
            )
            return decide(spec, inputs.policies, context)

        decision = self.rate.decide(inputs.decisions, str(meta.get("uid") or ""), decide_with)
        patch: dict[str, Any] = {"decision": decision.wire()}
        if decision.outcome == DecisionOutcome.NO_MATCH:
            # NB: no policy to count, so settled in the same write. A policy's Refused or
            # RateLimited is settled by _proceed, once the policy has counted the alert.
            patch["phase"] = Phase.NO_ACTION.value
        await self._write(alert, patch)
        if testhook.PAUSE is not None:
            await testhook.PAUSE.reached("decided", str(meta.get("namespace")), meta["name"])
        if decision.policy:  # NB: no Event for NoMatch, the common case: the status says it
            matched = decision.outcome == DecisionOutcome.MATCHED
            self._event(
                alert,
                "Normal" if matched else "Warning",
                "Decided",
                f"{decision.summary}. {decision.reason}",
            )
        log.info(
            "FalcoAlert %s/%s: %s (%s)",
            meta.get("namespace"),
            meta.get("name"),
            decision.summary,
            decision.policy or "no policy",
        )
        return decision, pod

    # -- acting --------------------------------------------------------------------------------

    async def _proceed(
        self,
        alert: dict[str, Any],
        decision: Decision,
        retry: int,
        pod: dict[str, Any] | None,
    ) -> None:
        status = alert.get("status") or {}
        phase = status.get("phase")
        if decision.outcome != DecisionOutcome.MATCHED:
            if phase in UNDECIDED_PHASES:
                if decision.policy:  # Refused or RateLimited: the policy won the alert
                    await self._count(alert, decision.policy, matched=True)
                await self._write(alert, {"phase": Phase.NO_ACTION.value})
            return
        if phase in SETTLED_PHASES:
            return
        if decision.mode == Mode.DRY_RUN:
            await self._record_plan(alert, decision, pod, Phase.DRY_RUN)
            return
        if decision.mode == Mode.REQUIRE_APPROVAL and not decision.approved_by:
            approval = approval_of(alert.get("metadata") or {})
            if not approval.approved:
                if phase != Phase.PENDING_APPROVAL.value:
                    await self._record_plan(alert, decision, pod, Phase.PENDING_APPROVAL)
                    meta = alert.get("metadata") or {}
                    self._event(
                        alert,
                        "Normal",
                        "ApprovalRequired",
                        f"Policy {decision.policy} requires approval: kubectl -n "
                        f"{meta.get('namespace')} annotate falcoalert {meta.get('name')} "
                        f"{APPROVE_ANNOTATION}=true",
                    )
                if approval.requested and approval.problem:
                    self._event(alert, "Warning", "ApprovalRejected", approval.problem)
                return
            assert approval.by is not None
            decision = decision.model_copy(update={"approved_by": approval.by})
            await self._write(alert, {"decision": {"approvedBy": approval.by}})
            self._event(alert, "Normal", "Approved", f"Approved by {approval.by}")
        await self._execute(alert, decision, retry, pod)

    async def _record_plan(
        self,
        alert: dict[str, Any],
        decision: Decision,
        pod: dict[str, Any] | None,
        phase: Phase,
    ) -> None:
        """DryRun, or RequireApproval before approval: record every step, send nothing."""
        steps, problems = await self._plan(alert, decision, pod)
        records = []
        for step in steps:
            problem = problems.get(step.action)
            if problem:
                record = step.dry_run_record().model_copy(
                    update={
                        "result": ActionResult.FORBIDDEN,
                        "message": clip(problem, 2048),
                        "planned": None,  # planned without what could not be read: misleading
                    }
                )
            else:
                record = step.dry_run_record()
            records.append(record)
        if decision.policy:  # before the phase write that settles it: see the module docstring
            await self._count(alert, decision.policy, matched=True)
        await self._write(
            alert, {"phase": phase.value, "remediation": {"actions": [r.wire() for r in records]}}
        )
        for record in records:
            self._event(alert, "Normal", "ActionPlanned", f"{record.name}: {record.message}")

    async def _plan(
        self, alert: dict[str, Any], decision: Decision, pod: dict[str, Any] | None
    ) -> tuple[list[PlannedStep], dict[str, str]]:
        """The steps, with the live pod and workload; ``problems`` maps steps that could not
        be planned because a read was forbidden to the message saying so."""
        meta = alert.get("metadata") or {}
        status = alert.get("status") or {}
        spec = FalcoAlertSpec.model_validate(alert.get("spec") or {})
        target = spec.target
        types = {a.type for a in decision.action_specs}
        problems: dict[str, str] = {}
        read_problem: str | None = None
        if pod is None and target.pod and target.namespace and types & POD_ACTIONS:
            try:
                pod = await self._call(self.remediator.read_pod, target.namespace, target.pod)
            except Forbidden as exc:
                read_problem = forbidden_message(
                    permission_text("get", resource_for("v1", "Pod")),
                    target.namespace,
                    "any pod action enabled in the Helm chart",
                    exc,
                )
        workload: WorkloadState | None = None
        workload_problem: str | None = None
        if pod is not None and "scaleWorkload" in types:
            try:
                workload = await self._call(self.remediator.read_workload, pod)
            except Forbidden as exc:
                workload_problem = forbidden_message(
                    "read the pod's owner (apps/replicasets get, apps/deployments/scale and "
                    "apps/statefulsets/scale get)",
                    target.namespace,
                    chart_grant("scaleWorkload"),
                    exc,
                )
        remediation = Remediation.model_validate(status.get("remediation") or {})
        model = FalcoAlert(
            metadata=dict(meta), spec=spec, status=FalcoAlertStatus(remediation=remediation)
        )
        steps = plan(
            decision,
            model,
            pod,
            workload=workload,
            operator_namespace=self.settings.namespace,
            protected_namespaces=self.settings.operator.protected_namespaces,
        )
        for step in steps:
            if read_problem and step.type in POD_ACTIONS:
                problems[step.action] = read_problem
            elif workload_problem and step.type == "scaleWorkload":
                problems[step.action] = workload_problem
        return steps, problems

    async def _execute(
        self,
        alert: dict[str, Any],
        decision: Decision,
        retry: int,
        pod: dict[str, Any] | None,
    ) -> None:
        """Enforce (or approved): run the steps in order, recording each before and after."""
        meta = alert.get("metadata") or {}
        identity = AlertIdentity.of(meta)
        where = (identity.namespace, identity.name)  # for the test hook
        steps, problems = await self._plan(alert, decision, pod)
        status = alert.get("status") or {}
        # Approved after waiting: the match was counted when the plan was recorded (and that
        # entry of the policy's bounded list may be long gone: the wait has no limit).
        counted = status.get("phase") == Phase.PENDING_APPROVAL.value
        existing = Remediation.model_validate(status.get("remediation") or {})
        records: dict[str, ActionRecord] = {r.name: r for r in existing.actions}
        order = [s.action for s in steps]
        stopped_by: str | None = None
        applied = 0

        def actions() -> list[dict[str, object]]:
            return [records[n].wire() for n in order if n in records]

        async def save(record: ActionRecord, *, write: bool = True) -> None:
            records[record.name] = record
            if write:
                await self._write(alert, {"remediation": {"actions": actions()}})

        for position, step in enumerate(steps, start=1):
            if step.done is not None:
                if step.done in FAILURES and not step.continue_on_error:
                    stopped_by = stopped_by or step.action
                continue
            if stopped_by is not None:
                record = step.dry_run_record().model_copy(
                    update={
                        "result": ActionResult.SKIPPED,
                        "message": f"Not run: action {stopped_by!r} failed before it",
                    }
                )
                await save(record)
                self._event(alert, "Normal", "ActionSkipped", f"{step.action}: {record.message}")
                continue
            if step.action in problems:
                record = step.finish_record(
                    ActionResult.FORBIDDEN, now(), problems[step.action]
                ).model_copy(update={"planned": None})
                await save(record)
                self._event(alert, "Warning", "ActionFailed", f"{step.action}: {record.message}")
                stopped_by = None if step.continue_on_error else step.action
                continue
            if step.skip_reason:
                record = step.start_record(now())
                await save(record)
                self._event(alert, "Normal", "ActionSkipped", f"{step.action}: {record.message}")
                continue
            await save(step.start_record(now()))
            if testhook.PAUSE is not None:
                await testhook.PAUSE.reached(f"started:{position}", *where)
            if step.type in REVERSIBLE:
                add = functools.partial(ensure_finalizer, known=alert)
                kept = await self._call(
                    add, self.rest, identity.namespace, identity.name, FINALIZER
                )
                if kept is not None:
                    alert["metadata"] = kept.get("metadata") or {}
                else:
                    # NB: the alert is being deleted (or gone): nothing would ever roll back
                    # what this step did, so it is not done. The start record stays behind.
                    log.warning(
                        "FalcoAlert %s/%s is being deleted; response stopped",
                        identity.namespace,
                        identity.name,
                    )
                    return
            outcome = await self._call(self.remediator.run, step, identity)
            if testhook.PAUSE is not None:
                await testhook.PAUSE.reached(f"applied:{position}", *where)
            if outcome.retryable:
                if retry + 1 < MAX_ATTEMPTS:
                    raise Retry(f"action {step.action!r}: {outcome.message}")
                outcome = StepOutcome(
                    outcome.result, f"{outcome.message} (gave up after {MAX_ATTEMPTS} attempts)"
                )
            record = step.finish_record(outcome.result, now(), outcome.message)
            # The last action's result goes out with the phase, in one write (just below).
            last = position == len(steps)
            await save(record, write=not last)
            if outcome.result == ActionResult.APPLIED:
                applied += 1
                self._event(alert, "Normal", "ActionApplied", f"{step.action}: {outcome.message}")
            elif outcome.result == ActionResult.SKIPPED:
                self._event(alert, "Normal", "ActionSkipped", f"{step.action}: {outcome.message}")
            else:
                self._event(alert, "Warning", "ActionFailed", f"{step.action}: {outcome.message}")
                if not step.continue_on_error:
                    stopped_by = step.action
            if testhook.PAUSE is not None and not last:
                await testhook.PAUSE.reached(f"recorded:{position}", *where)

        if testhook.PAUSE is not None:
            await testhook.PAUSE.reached("before-phase", *where)
        phase = final_phase(steps, records)
        patch: dict[str, Any] = {"phase": phase.value, "remediation": {"actions": actions()}}
        reversible_applied = any(
            r.result == ActionResult.APPLIED and r.type in REVERSIBLE for r in records.values()
        )
        if decision.ttl_seconds and reversible_applied:
            expires = now() + timedelta(seconds=decision.ttl_seconds)
            patch["remediation"]["expiresAt"] = _stamp(expires)
        # Counted before the phase write that settles the alert: a crash in between leaves it
        # unsettled, and the re-run's count adds nothing (see the module docstring). Every
        # applied record counts, including those of an interrupted earlier run.
        total = sum(1 for r in records.values() if r.result == ActionResult.APPLIED)
        if decision.policy:
            await self._count(alert, decision.policy, matched=not counted, actions=total)
        if testhook.PAUSE is not None:
            await testhook.PAUSE.reached("counted", *where)
        await self._write(alert, patch)
        if testhook.PAUSE is not None:
            await testhook.PAUSE.reached("settled", *where)
        log.info(
            "FalcoAlert %s/%s: %s (%d action(s) applied)",
            identity.namespace,
            identity.name,
            phase.value,
            applied,
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        alert: dict[str, Any] | None = await self._call(read_alert, self.rest, namespace, name)
        return alert

    async def _write(self, alert: dict[str, Any], patch: dict[str, Any]) -> None:
        """Merge-patch the alert's status, and keep ``alert`` as the API server now has it."""
        meta = alert.get("metadata") or {}
        stored: dict[str, Any] = await self._call(
            patch_alert_status, self.rest, meta.get("namespace"), meta["name"], patch
        )
        alert["metadata"] = stored.get("metadata") or meta
        alert["status"] = stored.get("status") or {}

    async def _count(
        self,
        alert: Mapping[str, Any],
        policy: str,
        *,
        matched: bool = False,
        actions: int | None = None,
    ) -> None:
        """Count the alert in the policy's status, once (a re-run adds nothing).

        A transient failure retries the whole response (the alert is not settled yet, so the
        retry counts again); any other failure is logged and the response goes on: the
        counters are a summary, the alert holds the record.
        """
        name = PolicyName.parse(policy)
        uid = str((alert.get("metadata") or {}).get("uid") or "")
        if name is None or not uid:
            return
        try:
            tally = Tally(uid, matched=matched, actions=actions)
            await self._call(count_alert, self.rest, name, tally)
        except ApiError as exc:
            log.warning("Could not update the counters of %s: %s", policy, exc.message)

    @staticmethod
    async def _call(fn: Any, *args: Any) -> Any:
        """A blocking adapter call in a worker thread; transient API failures become Retry."""
        try:
            return await asyncio.to_thread(fn, *args)
        except Transient as exc:
            raise Retry(exc.message, delay=exc.retry_after or RETRY_DELAY) from exc

    @staticmethod
    def _event(alert: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        body = kopf.Body(dict(alert))  # type: ignore[arg-type]  # a RawBody, as read
        kopf.event(body, type=type_, reason=reason, message=clip(message, _MAX_EVENT_MESSAGE))


def _decision_of(status: Mapping[str, Any]) -> Decision | None:
    raw = status.get("decision")
    return Decision.model_validate(raw) if isinstance(raw, dict) and raw else None
