"""Operator state the handlers share: settings, and the namespace-label index kopf keeps."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import kopf

from falco_triage.settings import Settings, load_settings

_lock = threading.Lock()
_settings: Settings | None = None


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


NamespaceIndex = kopf.Index[str, dict[str, str]]


@kopf.index("", "v1", "namespaces")
def namespace_labels_index(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    """Namespace labels kept in memory by kopf (severity context, policy namespace selectors)."""
    return {name: dict(labels)}


def namespace_labels(index: NamespaceIndex, namespace: str | None) -> dict[str, str]:
    if namespace is None:
        return {}
    for labels in index.get(namespace, []):
        return dict(labels)
    return {}
