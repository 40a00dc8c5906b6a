"""One place that knows how to reach the Kubernetes API.

In a pod the service-account credentials are used; elsewhere the kubeconfig named by
``KUBECONFIG`` (read when called, not when the kubernetes package was imported) or
``~/.kube/config``. The process-wide client is built once; tests and tools that talk to
several clusters build their own with :func:`new_api_client`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

ApiClient = client.ApiClient
"""Re-exported so callers name the type without importing the kubernetes package."""

_SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
_lock = threading.Lock()
_default: client.ApiClient | None = None
_default_pool_size: int | None = None


class ClientConfigError(RuntimeError):
    """No usable credentials: not in a pod, and no readable kubeconfig."""


def new_api_client(
    kubeconfig: Path | None = None, *, pool_size: int | None = None
) -> client.ApiClient:
    """A fresh client: ``kubeconfig`` if given, else in-cluster config, else ``KUBECONFIG``.

    ``pool_size`` caps the HTTP connections kept open (the default is the client's own,
    5 per CPU); callers that run N requests in parallel want at least N. Raises
    :class:`ClientConfigError` naming what was tried.
    """
    try:
        configuration = _configuration(kubeconfig)
    except (ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClientConfigError(
            f"cannot load Kubernetes credentials (in-cluster, or kubeconfig {where}): {exc}"
        ) from exc
    if pool_size is not None:
        configuration.connection_pool_maxsize = max(pool_size, 1)
    return client.ApiClient(configuration)


def _configuration(kubeconfig: Path | None) -> client.Configuration:
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]  # the client leaves it untyped
            config_file=str(kubeconfig), client_configuration=configuration
        )
    elif os.environ.get(_SERVICE_HOST_ENV):
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        # NB: the kubernetes package reads KUBECONFIG once, at import; read it now instead so
        # a test (or a wrapper script) can set it after importing.
        # Several paths separated by ':' are merged, as kubectl does.
        paths = os.environ.get("KUBECONFIG") or "~/.kube/config"
        merged = os.pathsep.join(os.path.expanduser(p) for p in paths.split(os.pathsep) if p)
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=merged, client_configuration=configuration
        )
    return configuration


def api_client() -> client.ApiClient:
    """The process-wide client, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = new_api_client(pool_size=_default_pool_size)
        return _default


def set_pool_size(size: int) -> None:
    """Connections the process-wide client keeps open: at least the threads that use it at
    once (beyond the pool, urllib3 opens a new TLS connection per request and warns)."""
    global _default_pool_size
    with _lock:
        _default_pool_size = size
