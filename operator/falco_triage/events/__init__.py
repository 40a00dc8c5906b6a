"""From request bytes to bounded, redacted Falco events and the FalcoAlert they belong to.

Pure: no I/O, no kopf, kubernetes or aiohttp (import-linter enforces it), so the CLI's
``falco-triage analyze FILE`` and the HTTP receiver share exactly the same checks.

``parse`` turns bytes into JSON objects under limits, ``normalize`` turns one object into a
type-checked, truncated, redacted :class:`~falco_triage.models.event.FalcoEvent`, ``target``
decides what the event concerns and ``fingerprint`` names the alert it aggregates into.
"""

from falco_triage.events.fingerprint import alert_name, alert_spec, fingerprint
from falco_triage.events.normalize import load_events, normalize_event
from falco_triage.events.parse import Limits, PayloadError, parse_payload
from falco_triage.events.redact import redact
from falco_triage.events.target import resolve_target

__all__ = [
    "Limits",
    "PayloadError",
    "alert_name",
    "alert_spec",
    "fingerprint",
    "load_events",
    "normalize_event",
    "parse_payload",
    "redact",
    "resolve_target",
]
