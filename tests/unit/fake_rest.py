"""An in-memory stand-in for :class:`~falco_triage.k8s.rest.RestClient` holding one object, with
the API server's resourceVersion precondition on status merge patches."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from falco_triage.k8s.errors import Conflict, NotFound
from falco_triage.k8s.status import FIELD_MANAGER


class FakeRest:
    """One stored object; merge patches of status with a resourceVersion precondition.

    ``interfere`` runs before each patch is judged: another writer that gets in first.
    """

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.calls: list[tuple[str, str]] = []
        self.patches: list[dict[str, Any]] = []
        self.interfere: list[dict[str, Any]] = []

    def get(self, path: str) -> dict[str, Any]:
        self.calls.append(("GET", path))
        if self.obj is None:
            raise NotFound("gone", status=404)
        return copy.deepcopy(self.obj)

    def merge_patch(
        self, path: str, body: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        assert field_manager == FIELD_MANAGER
        self.calls.append(("PATCH", path))
        self.patches.append(copy.deepcopy(dict(body)))
        if self.obj is None:
            raise NotFound("gone", status=404)
        if self.interfere:
            self._write(self.interfere.pop(0))
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified", status=409, reason="Conflict")
        self._write(body["status"])
        return copy.deepcopy(self.obj)

    def _write(self, status: Mapping[str, Any]) -> None:
        assert self.obj is not None
        self.obj.setdefault("status", {}).update(copy.deepcopy(dict(status)))
        version = int(self.obj["metadata"]["resourceVersion"]) + 1
        self.obj["metadata"]["resourceVersion"] = str(version)
