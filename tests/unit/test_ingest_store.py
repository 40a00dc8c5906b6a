"""The alert store's counting logic and the error translation it relies on, against an
in-memory stand-in for the API server that keeps its semantics (status dropped on create,
resourceVersion preconditions on merge patches, 409s): concurrent writers stay exact, a lost
answer is resolved without double counting, and client exceptions become readable errors.
(The real API server runs the same paths in tests/integration/test_ingest_*.)"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from falco_triage.events.fingerprint import alert_spec
from falco_triage.k8s.alerts import (
    AlertStore,
    Delta,
    NamespaceUnavailable,
    WriteUnknown,
    alert_body,
)
from falco_triage.k8s.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transient,
    translate,
    translated,
)
from falco_triage.models.alert import FalcoAlertSpec
from tests.unit.factories import make_event

T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


def _status_error(code: int, reason: str, message: str, **details: Any) -> ApiException:
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": reason,
            "message": message,
            "details": details,
        }
    )
    return exc


class FakeCustomObjects:
    """Just enough of CustomObjectsApi, with the API server's concurrency semantics."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.namespaces = {"shop", "falco-triage"}
        self.lock = threading.Lock()
        self.before_patch: Callable[[], None] | None = None
        self.lose_answer_after_patch = 0
        self.requests: list[str] = []

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        with self.lock:
            self.requests.append("create")
            if namespace not in self.namespaces:
                raise _status_error(
                    404, "NotFound", f'namespaces "{namespace}" not found', kind="namespaces"
                )
            key = (namespace, body["metadata"]["name"])
            if key in self.objects:
                raise _status_error(409, "AlreadyExists", "already exists")
            obj = copy.deepcopy(body)
            obj.pop("status", None)  # the status subresource: create ignores status
            obj["metadata"]["resourceVersion"] = self._bump()
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> dict[str, Any]:
        with self.lock:
            self.requests.append("get")
            if (namespace, name) not in self.objects:
                raise _status_error(404, "NotFound", "not found", kind="falcoalerts")
            return copy.deepcopy(self.objects[(namespace, name)])

    def patch_namespaced_custom_object_status(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: dict[str, Any],
        **kwargs: Any,
    ) -> dict[str, Any]:
        assert kwargs["_content_type"] == "application/merge-patch+json"
        if self.before_patch:
            self.before_patch()
        with self.lock:
            self.requests.append("patch")
            obj = self.objects.get((namespace, name))
            if obj is None:
                raise _status_error(404, "NotFound", "not found")
            if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise _status_error(409, "Conflict", "the object has been modified")
            obj.setdefault("status", {}).update(copy.deepcopy(body["status"]))
            obj["metadata"]["resourceVersion"] = self._bump()
            result = copy.deepcopy(obj)
        if self.lose_answer_after_patch:
            self.lose_answer_after_patch -= 1
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
        return result

    def count(self, namespace: str, name: str) -> int:
        return int(self.objects[(namespace, name)]["status"]["occurrences"]["count"])


def _store(
    fake: FakeCustomObjects, observed: list[tuple[str, str | None]] | None = None
) -> AlertStore:
    store = AlertStore(
        client.ApiClient(),
        observe=(lambda op, err: observed.append((op, err))) if observed is not None else None,
    )
    store._api = fake  # type: ignore[assignment]
    return store


def _spec() -> Callable[[], FalcoAlertSpec]:
    return lambda: alert_spec(make_event(), "falco-triage")


def _delta(count: int, minutes: int = 0) -> Delta:
    return Delta(count, T0 + timedelta(minutes=minutes), T0 + timedelta(minutes=minutes))


def test_create_then_count_with_phase_received() -> None:
    fake = FakeCustomObjects()
    observed: list[tuple[str, str | None]] = []
    recorded = _store(fake, observed).record("shop", "a", _spec(), _delta(3))
    assert recorded.created
    obj = fake.objects[("shop", "a")]
    assert obj["status"]["occurrences"]["count"] == 3
    assert obj["status"]["phase"] == "Received"
    assert obj["metadata"]["labels"]["falcotriage.io/priority"] == "Notice"
    assert observed == [("create", None), ("patch_status", None)]


def test_known_version_patches_without_a_read_and_merges_times() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    first = store.record("shop", "a", _spec(), _delta(1, minutes=5))
    fake.requests.clear()
    second = store.record("shop", "a", _spec(), _delta(2, minutes=1), known=first.stored)
    assert fake.requests == ["patch"]
    assert not second.created
    occurrences = second.stored.occurrences
    assert occurrences is not None
    assert occurrences.count == 3
    assert (occurrences.first_seen, occurrences.last_seen) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=5),
    )


def test_stale_version_reads_again_and_stays_exact() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    first = store.record("shop", "a", _spec(), _delta(1))
    store.record("shop", "a", _spec(), _delta(10), known=first.stored)  # someone else's write
    store.record("shop", "a", _spec(), _delta(1), known=first.stored)  # stale: 409, read, retry
    assert fake.count("shop", "a") == 12


def test_existing_alert_is_counted_not_recreated() -> None:
    fake = FakeCustomObjects()
    _store(fake).record("shop", "a", _spec(), _delta(1))
    recorded = _store(fake).record("shop", "a", _spec(), _delta(4))
    assert not recorded.created
    assert fake.count("shop", "a") == 5


def test_an_operator_status_is_kept() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    store.record("shop", "a", _spec(), _delta(1))
    fake.objects[("shop", "a")]["status"]["phase"] = "Analyzed"
    fake.objects[("shop", "a")]["status"]["report"] = "# Report"
    store.record("shop", "a", _spec(), _delta(1))
    status = fake.objects[("shop", "a")]["status"]
    assert (status["phase"], status["report"], status["occurrences"]["count"]) == (
        "Analyzed",
        "# Report",
        2,
    )


def test_concurrent_writers_are_exact() -> None:
    fake = FakeCustomObjects()
    # Widen the race window between each writer's read and its patch.
    fake.before_patch = lambda: threading.Event().wait(0.001)
    stores = [_store(fake) for _ in range(4)]

    def write(store: AlertStore) -> None:
        for _ in range(25):
            store.record("shop", "a", _spec(), _delta(1))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.count("shop", "a") == 100
    assert "get" in fake.requests  # conflicts really happened and were resolved by reading


def test_lost_answer_that_was_applied_is_not_counted_twice() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    store.record("shop", "a", _spec(), _delta(1))
    fake.lose_answer_after_patch = 1
    with pytest.raises(WriteUnknown) as info:
        store.record("shop", "a", _spec(), _delta(5))
    assert fake.count("shop", "a") == 6  # it did land
    recorded = store.record("shop", "a", _spec(), _delta(5 + 2), doubt=info.value.doubt)
    assert recorded.already_counted == 5
    assert fake.count("shop", "a") == 8


def test_lost_answer_that_was_not_applied_is_written_again() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    store.record("shop", "a", _spec(), _delta(1))
    version = fake.objects[("shop", "a")]["metadata"]["resourceVersion"]

    def refuse() -> None:
        raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())

    fake.before_patch = refuse
    with pytest.raises(WriteUnknown) as info:
        store.record("shop", "a", _spec(), _delta(5))
    fake.before_patch = None
    assert info.value.doubt.resource_version == version
    store.record("shop", "a", _spec(), _delta(5), doubt=info.value.doubt)
    assert fake.count("shop", "a") == 6


def test_refused_connection_is_transient_and_certainly_not_applied() -> None:
    fake = FakeCustomObjects()

    def refuse(*_: Any, **__: Any) -> Any:
        raise urllib3.exceptions.MaxRetryError(
            None,  # type: ignore[arg-type]
            "/apis",
            urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
        )

    fake.create_namespaced_custom_object = refuse  # type: ignore[method-assign]
    with pytest.raises(Transient) as info:
        _store(fake).record("shop", "a", _spec(), _delta(1))
    assert not isinstance(info.value, WriteUnknown)
    assert not info.value.maybe_applied


def test_missing_namespace_is_reported_as_unavailable() -> None:
    with pytest.raises(NamespaceUnavailable, match='namespaces "gone" not found'):
        _store(FakeCustomObjects()).record("gone", "a", _spec(), _delta(1))


def test_alert_body_labels_are_valid_label_values() -> None:
    spec = alert_spec(make_event("Redirect STDOUT/STDIN to Network Connection in Container"), "x")
    body = alert_body("redirect-stdout-abc", "shop", spec)
    labels = body["metadata"]["labels"]
    assert labels["falcotriage.io/rule"] == "redirect-stdout"
    assert labels["falcotriage.io/source"] == "syscall"
    assert len(labels["falcotriage.io/fingerprint"]) == 40
    assert body["spec"]["fingerprint"] == spec.fingerprint


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", Conflict),
        (409, "Conflict", Conflict),
        (401, "Unauthorized", Forbidden),
        (403, "Forbidden", Forbidden),
        (400, "BadRequest", Invalid),
        (422, "Invalid", Invalid),
        (429, "TooManyRequests", Transient),
        (500, "InternalError", Transient),
        (503, "ServiceUnavailable", Transient),
        (504, "Timeout", Transient),
    ],
)
def test_api_exceptions_are_translated(code: int, reason: str, kind: type[Exception]) -> None:
    error = translate(_status_error(code, reason, f'falcoalerts.falcotriage.io "a" {reason}'))
    assert type(error) is kind
    assert error.message == f'falcoalerts.falcotriage.io "a" {reason}'
    assert error.status == code


def test_conflict_knows_already_exists() -> None:
    assert translate(_status_error(409, "AlreadyExists", "x")).already_exists  # type: ignore[attr-defined]
    assert not translate(_status_error(409, "Conflict", "x")).already_exists  # type: ignore[attr-defined]


def test_which_server_errors_may_have_applied_a_write() -> None:
    assert translate(_status_error(504, "Timeout", "x"), write=True).maybe_applied  # type: ignore[attr-defined]
    assert not translate(_status_error(503, "ServiceUnavailable", "x"), write=True).maybe_applied  # type: ignore[attr-defined]
    assert not translate(_status_error(504, "Timeout", "x")).maybe_applied  # type: ignore[attr-defined]


def test_retry_after_is_read() -> None:
    exc = _status_error(429, "TooManyRequests", "slow down")
    exc.headers = {"Retry-After": "3"}
    assert translate(exc).retry_after == 3.0  # type: ignore[attr-defined]


def test_non_json_body_and_transport_errors_are_readable() -> None:
    exc = ApiException(status=502, reason="Bad Gateway")
    exc.body = "<html>bad gateway</html>"
    assert translate(exc).message == "<html>bad gateway</html>"
    reset = translate(urllib3.exceptions.ProtocolError("Connection aborted."), write=True)
    assert isinstance(reset, Transient)
    assert reset.maybe_applied
    assert "Kubernetes API unreachable" in reset.message


def test_translated_context_manager() -> None:
    with pytest.raises(NotFound), translated():
        raise _status_error(404, "NotFound", "gone")
    with pytest.raises(Transient), translated():
        raise ConnectionRefusedError("refused")


def test_a_conflict_reads_the_alert_instead_of_creating_it_again() -> None:
    fake = FakeCustomObjects()
    store = _store(fake)
    first = store.record("shop", "a", _spec(), _delta(1))
    store.record("shop", "a", _spec(), _delta(10), known=first.stored)  # someone else's write
    fake.requests.clear()
    store.record("shop", "a", _spec(), _delta(1), known=first.stored)
    assert fake.requests == ["patch", "get", "patch"]
    assert fake.count("shop", "a") == 12
