"""Process-wide operator state the handlers share: settings and the namespace-label index."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import kopf

from falco_triage.settings import Settings, load_settings

_lock = threading.Lock()
_settings: Settings | None = None
_namespace_labels: dict[str, dict[str, str]] = {}


def configure(settings: Settings) -> None:
    global _settings
    with _lock:
        _settings = settings


def current_settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def namespace_labels(namespace: str | None) -> dict[str, str]:
    if namespace is None:
        return {}
    with _lock:
        return dict(_namespace_labels.get(namespace, {}))


@kopf.on.event("", "v1", "namespaces")
def track_namespace(name: str, labels: Mapping[str, str], type: str, **_: Any) -> None:
    """Keep namespace labels in memory (severity context, policy namespace selectors)."""
    with _lock:
        if type == "DELETED":
            _namespace_labels.pop(name, None)
        else:
            _namespace_labels[name] = dict(labels)
