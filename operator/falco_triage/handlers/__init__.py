"""kopf handlers: thin wiring from Kubernetes events to the pure domain functions.

Importing this package registers every handler with kopf's default registry.
"""

from falco_triage.handlers import (
    analysis,
    decisions,
    policies,
    response,
    retention,
    startup,
    state,
)

__all__ = ["analysis", "decisions", "policies", "response", "retention", "startup", "state"]
