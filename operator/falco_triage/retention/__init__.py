"""Which FalcoAlerts to delete so live alerts stay bounded. Pure, no I/O."""

from falco_triage.retention.select import AlertSummary, select_for_deletion

__all__ = ["AlertSummary", "select_for_deletion"]
